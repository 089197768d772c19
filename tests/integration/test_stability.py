"""Stability AI's v2beta image-to-video API on a real gateway + real Triton (streaming variant, tiny model),
called with `requests` exactly as Stability's documentation samples it: a multipart post, then polling the
result with `Accept: video/*` until 200 and writing the bytes; JSON results; errors in Stability's shape."""
from __future__ import annotations

import base64
import time

import pytest
import requests
from PIL import Image

from tests.support import TOKEN, encode_image
from tests.support.videos import decode_video

SMALL = {"num_frames": 4, "num_inference_steps": 2}
"""The model's own parameters, accepted beside Stability's fields (the CPU config's budget is small)."""


@pytest.fixture(scope="module")
def gateway_options():
    return {"max_body_bytes": 2 * 1024 * 1024}


def png(width: int, height: int) -> bytes:
    return encode_image(Image.new("RGB", (width, height), (200, 40, 40)).resize((width, height)))


def start(gateway, image: bytes, **data) -> requests.Response:
    return requests.post(f"{gateway.url}/v2beta/image-to-video", headers={"authorization": f"Bearer {TOKEN}"},
                         files={"image": ("image.png", image, "image/png")},
                         data={"seed": 0, "cfg_scale": 1.8, "motion_bucket_id": 127, **SMALL, **data})


def poll(gateway, generation_id: str, accept: str = "video/*") -> requests.Response:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        response = requests.request("GET", f"{gateway.url}/v2beta/image-to-video/result/{generation_id}",
                                    headers={"accept": accept, "authorization": f"Bearer {TOKEN}"})
        if response.status_code != 202:
            return response
        assert response.json() == {"id": generation_id, "status": "in-progress"}
        time.sleep(0.1)
    raise AssertionError("the generation never finished")


@pytest.mark.parametrize(("width", "height", "fields", "expected"), [
    (64, 64, SMALL, (64, 64)),
    (1024, 576, {"num_frames": 2, "num_inference_steps": 1}, (640, 384)),  # the budget's size, at the least work
])
def test_documented_sample_writes_a_video_of_the_image_s_size(gateway, tmp_path, width, height, fields, expected):
    """A 64×64 image keeps its size; 1024×576 is scaled into the CPU config's pixel budget (262144)."""
    response = start(gateway, png(width, height), **fields)
    assert response.status_code == 200, response.text
    generation_id = response.json().get("id")
    response = poll(gateway, generation_id)
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    assert response.headers["finish-reason"] == "SUCCESS" and int(response.headers["seed"]) > 0
    (tmp_path / "video.mp4").write_bytes(response.content)
    video = decode_video((tmp_path / "video.mp4").read_bytes(), "mp4")
    assert (video.num_frames, video.size) == (fields["num_frames"], expected)


def test_json_result_carries_the_video_and_the_seed_and_202_while_running(gateway):
    generation_id = start(gateway, png(64, 64), seed=1234, num_inference_steps=30).json()["id"]
    running = requests.get(f"{gateway.url}/v2beta/image-to-video/result/{generation_id}",
                           headers={"authorization": f"Bearer {TOKEN}", "accept": "application/json"})
    assert running.status_code == 202 and running.json() == {"id": generation_id, "status": "in-progress"}
    result = poll(gateway, generation_id, accept="application/json")
    assert result.status_code == 200 and result.json()["finish_reason"] == "SUCCESS" and result.json()["seed"] == 1234
    assert decode_video(base64.b64decode(result.json()["video"]), "mp4").num_frames == 4


@pytest.mark.parametrize(("data", "field"), [({"cfg_scale": 11}, "cfg_scale"), ({"motion_bucket_id": 0}, "motion_bucket_id"),
                                             ({"seed": -1}, "seed"), ({"frobnicate": 1}, "frobnicate")])
def test_out_of_range_fields_are_400_in_stability_s_shape(gateway, data, field):
    response = start(gateway, png(64, 64), **data)
    body = response.json()
    assert response.status_code == 400 and body["name"] == "bad_request" and len(body["id"]) == 32
    assert field in body["errors"][0]


def test_unknown_id_missing_image_wrong_key_and_oversized_body(gateway):
    missing = requests.get(f"{gateway.url}/v2beta/image-to-video/result/nosuchid", headers={"authorization": f"Bearer {TOKEN}"})
    assert missing.status_code == 404 and missing.json()["name"] == "not_found"
    no_image = requests.post(f"{gateway.url}/v2beta/image-to-video", headers={"authorization": f"Bearer {TOKEN}"},
                             files={"seed": (None, "0")})
    assert no_image.status_code == 400 and "image" in no_image.json()["errors"][0]
    wrong_key = requests.post(f"{gateway.url}/v2beta/image-to-video", headers={"authorization": "Bearer nope"},
                              files={"image": ("image.png", png(64, 64), "image/png")})
    assert wrong_key.status_code == 401 and wrong_key.json()["name"] == "unauthorized"
    too_large = start(gateway, b"\0" * (3 * 1024 * 1024))
    assert too_large.status_code == 413 and too_large.json()["name"] == "payload_too_large"
