"""The REST gateway against the real Triton: each hosted-endpoint request shape as its sample code sends it."""
import base64

import pytest
import requests

from tests.support import TOKEN
from tests.support.gateways import Gateway
from svd_contract import PARAMETERS
from svd_gateway import Settings
from svd_triton.launcher import free_port
from tests.support.videos import decode_video

SMALL = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2}
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def gateway_triton():
    return "triton"


@pytest.fixture(scope="module")
def gateway_options():
    return {"max_outputs": 2, "max_body_bytes": 2 * 1024 * 1024}


def test_tir_style_predict_returns_base64_avi(gateway, sample_png):
    body = {"image": base64.b64encode(sample_png).decode(), "fps": 10, **SMALL}
    reply = requests.post(f"{gateway.url}/v1/models/stable-video-diffusion:predict", json=body, headers=HEADERS, timeout=120)
    assert reply.status_code == 200, reply.text
    video = base64.b64decode(reply.json()["predictions"])
    assert video[8:12] == b"AVI "
    decoded = decode_video(video, "avi")
    assert decoded.num_frames == 4 and decoded.fps == pytest.approx(10, abs=0.5)


def test_forge_style_data_uri_reports_the_ignored_prompt(gateway, sample_png):
    body = {"image": "data:image/png;base64," + base64.b64encode(sample_png).decode(), "fps": 7, "seed": 17,
            "width": 128, "height": 64, "num_frames": 4, "num_inference_steps": 2, "guidance_scale": 2.5,
            "prompt": "a rocket launch", "model": "stabilityai-stable-video-diffusion", "model_version": "1.1",
            "gpu_type": "L40S", "region": "eu-north1"}
    reply = requests.post(f"{gateway.url}/v1/inference/stabilityai-stable-video-diffusion", json=body, headers=HEADERS, timeout=120)
    assert reply.status_code == 200, reply.text
    payload = reply.json()
    assert payload["seed"] == 17 and payload["format"] == "mp4"
    warnings = " | ".join(payload["warnings"])  # pins that do not match are reported, not refused
    assert "prompt" in warnings and "model_version '1.1'" in warnings and "gpu_type 'L40S'" in warnings
    assert "region 'eu-north1' was asked; this deployment is 'local'" in warnings
    assert decode_video(base64.b64decode(payload["video"]), "mp4").size == (128, 64)


def test_segments_interpolation_and_loop_fields_reach_the_model(gateway, sample_png):
    body = {"image": base64.b64encode(sample_png).decode(), "fps": 5, "segments": 2, "interpolate": 2,
            "loop": "pingpong", "video_format": "mp4", **SMALL}
    reply = requests.post(f"{gateway.url}/v1/models/svd:predict", json=body, headers=HEADERS, timeout=300)
    assert reply.status_code == 200, reply.text
    video = decode_video(base64.b64decode(reply.json()["predictions"]), "mp4")
    assert video.num_frames == 2 * 13 - 2 and video.fps == pytest.approx(10, rel=0.05)  # 7 joined, 13 interpolated


def test_openai_style_url_and_b64_and_a_bounded_store(gateway, sample_png):
    body = {"model": "svd-xt", "image": base64.b64encode(sample_png).decode(), **SMALL}
    reply = requests.post(f"{gateway.url}/v1/video/generations", json=body, headers=HEADERS, timeout=120)
    assert reply.status_code == 200, reply.text
    [entry] = reply.json()["data"]
    assert reply.json()["created"] > 0
    fetched = requests.get(entry["url"], timeout=30)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "video/mp4"
    assert fetched.content == base64.b64decode(entry["b64_json"])
    assert decode_video(fetched.content, "mp4").num_frames == 4
    for _ in range(2):  # the store keeps 2 videos here: the first link is then gone
        requests.post(f"{gateway.url}/v1/video/generations", json={**body, "response_format": "url"}, headers=HEADERS, timeout=120)
    assert requests.get(entry["url"], timeout=30).status_code == 404


def test_wrong_or_missing_token_is_401(gateway, sample_png):
    body = {"image": base64.b64encode(sample_png).decode()}
    for headers in ({}, {"Authorization": "Bearer nope"}):
        reply = requests.post(f"{gateway.url}/predict", json=body, headers=headers, timeout=30)
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("body,field", [
    ({"num_frames": 1, **{k: v for k, v in SMALL.items() if k != "num_frames"}}, "num_frames"),  # the schema's range
    ({"num_frames": 5, "decode_chunk_size": 6, **{k: v for k, v in SMALL.items() if k != "num_frames"}}, "decode_chunk_size"),  # the model's
    ({"frames": 8}, "frames"),
    ({"fps": "fast"}, "fps"),
])
def test_bad_fields_are_400_naming_them(gateway, sample_png, body, field):
    reply = requests.post(f"{gateway.url}/v1/video/generations",
                          json={"image": base64.b64encode(sample_png).decode(), **body}, headers=HEADERS, timeout=60)
    assert reply.status_code == 400, reply.text
    assert field in reply.json()["error"]["message"] and reply.json()["error"]["field"] == field


def test_image_urls_are_never_fetched_and_bad_base64_is_400(gateway):
    for image in ("https://example.com/cat.png", "not base64 at all!"):
        reply = requests.post(f"{gateway.url}/predict", json={"image": image}, headers=HEADERS, timeout=30)
        assert reply.status_code == 400 and reply.json()["error"]["field"] == "image"


def test_oversized_body_is_413(gateway):
    reply = requests.post(f"{gateway.url}/predict", data=b"{" + b" " * (3 * 1024 * 1024) + b"}", headers=HEADERS, timeout=30)
    assert reply.status_code == 413


def test_openapi_schema_lists_the_three_shapes(gateway):
    paths = requests.get(f"{gateway.url}/openapi.json", timeout=30).json()["paths"]
    assert {"/v1/models/{model}:predict", "/v1/inference/{slug}", "/v1/video/generations"} <= set(paths)
    schema = requests.get(f"{gateway.url}/openapi.json", timeout=30).json()
    body = schema["components"]["schemas"]["PredictRequest"]["properties"]
    assert set(PARAMETERS) <= set(body)
    [width] = [kind for kind in body["width"]["anyOf"] if kind["type"] == "integer"]
    assert (width["minimum"], width["maximum"], width["multipleOf"]) == (64, 2048, 8)
    [formats] = [kind for kind in body["video_format"]["anyOf"] if "enum" in kind]
    assert formats["enum"] == list(PARAMETERS["video_format"].choices)
    assert [p["name"] for p in paths["/v1/models/{model}:predict"]["post"]["parameters"]] == ["model"]


def test_triton_down_is_503_and_deadline_is_504(triton, sample_png, tmp_path):
    """A synchronous request waits for a model that is not ready within its deadline (--timeout), then 503."""
    body = {"image": base64.b64encode(sample_png).decode(), **SMALL}
    with Gateway(Settings(triton_url=f"localhost:{free_port()}", token=TOKEN, data_dir=tmp_path / "down",
                          timeout=2, poll_seconds=0.2)) as down:
        reply = requests.post(f"{down.url}/predict", json=body, headers=HEADERS, timeout=60)
        assert reply.status_code == 503 and reply.json()["error"]["code"] == "unavailable"
        assert "not ready within this request's deadline (2 s)" in reply.json()["error"]["message"]
        assert requests.get(f"{down.url}/healthz", timeout=30).status_code == 503
    with Gateway(Settings(triton_url=triton.grpc_url, token=TOKEN, timeout=0.5, data_dir=tmp_path / "impatient")) as impatient:
        reply = requests.post(f"{impatient.url}/predict", json={**body, "num_inference_steps": 100, "width": 128,
                                                                 "height": 128}, headers=HEADERS, timeout=60)
        assert reply.status_code == 504, reply.text


def test_fal_deep_cache_presets_and_the_models_own_names_reach_the_model(gateway, sample_png):
    """fal's `deep_cache` preset runs the engine's feature caching: the same frames as its cache_interval, not
    the uncached ones; a preset beside cache_interval is refused naming it."""
    def frames(**fields) -> bytes:
        body = {"image": base64.b64encode(sample_png).decode(), "seed": 5, "video_format": "frames", **SMALL,
                "num_inference_steps": 3, **fields}
        reply = requests.post(f"{gateway.url}/v1/models/svd:predict", json=body, headers=HEADERS, timeout=120)
        assert reply.status_code == 200, reply.text
        return base64.b64decode(reply.json()["predictions"])

    medium = frames(deep_cache="medium")
    assert medium == frames(cache_interval=3, cache_branch_id=0)
    assert medium != frames() and frames() == frames(deep_cache="none")
    reply = requests.post(f"{gateway.url}/predict", headers=HEADERS, timeout=30, json={
        "image": base64.b64encode(sample_png).decode(), "deep_cache": "high", "cache_interval": 2})
    assert reply.status_code == 400 and "deep_cache is a preset of cache_interval" in reply.text
