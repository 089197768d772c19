"""Hostile requests to OpenAI's Videos API and Stability's image-to-video API on a real gateway: each gets a
clear 4xx in its family's own error shape naming the field, no paths or tracebacks, and nothing is stored."""
from __future__ import annotations

import base64
import json
import sqlite3

import httpx
import pytest

from tests.support import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 1024 * 1024
NOT_AN_IMAGE = "data:image/png;base64," + base64.b64encode(b"hello, not a picture").decode()


@pytest.fixture(scope="module")
def gateway_options():
    return {"max_body_bytes": LIMIT}


def stored(gateway) -> tuple:
    """Every stored byte and row: the files under the data directory, the jobs and uploads in its database."""
    data = gateway.settings.data_dir
    names = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file() and "gateway.db" not in p.name)
    with sqlite3.connect(data / "gateway.db") as database:
        rows = tuple(database.execute(f"select count(*) from {table}").fetchone()[0] for table in ("predictions", "files"))
    return names, rows


def form(**fields) -> dict:
    return {"files": {name: value if isinstance(value, tuple) else (None, str(value)) for name, value in fields.items()}}


OPENAI_CASES = {
    "oversized multipart": ("POST", "/v1/videos", form(prompt="x", input_reference=("a.png", b"\0" * 2 * LIMIT, "image/png")),
                            413, None),
    "text/plain body": ("POST", "/v1/videos", {"content": b"prompt=x", "headers": {"Content-Type": "text/plain"}}, 400, "body"),
    "invalid JSON": ("POST", "/v1/videos", {"content": b"{", "headers": {"Content-Type": "application/json"}}, 400, "body"),
    "JSON that is no object": ("POST", "/v1/videos", {"json": [1, 2]}, 400, None),
    "no prompt": ("POST", "/v1/videos", {"json": {"size": "64x64"}}, 400, "prompt"),
    "negative seconds": ("POST", "/v1/videos", {"json": {"prompt": "x", "seconds": "-4"}}, 400, "seconds"),
    "absurd seconds": ("POST", "/v1/videos", {"json": {"prompt": "x", "seconds": "4" * 30}}, 400, "seconds"),
    "fractional seconds": ("POST", "/v1/videos", form(prompt="x", seconds="4.5"), 400, "seconds"),
    "size 99999x1": ("POST", "/v1/videos", {"json": {"prompt": "x", "size": "99999x1"}}, 400, "size"),
    "size and width": ("POST", "/v1/videos", {"json": {"prompt": "x", "size": "64x64", "width": 64}}, 400, "size"),
    "a data URI that is not an image": ("POST", "/v1/videos",
                                        {"json": {"prompt": "x", "input_reference": {"image_url": NOT_AN_IMAGE}}},
                                        400, "input_reference"),
    "a text file as input_reference": ("POST", "/v1/videos",
                                       form(prompt="x", input_reference=("a.txt", b"just text", "text/plain")),
                                       400, "input_reference"),
    "an image URL outside the allow-list": ("POST", "/v1/videos",
                                            {"json": {"prompt": "x", "input_reference": {"image_url": "http://10.0.0.1/a.png"}}},
                                            400, "input_reference.image_url"),
    "an unknown file_id": ("POST", "/v1/videos", {"json": {"prompt": "x", "input_reference": {"file_id": "nosuch"}}},
                           404, "input_reference.file_id"),
    "an unknown field": ("POST", "/v1/videos", {"json": {"prompt": "x", "frobnicate": 1}}, 400, "frobnicate"),
    "a webm video_format": ("POST", "/v1/videos", {"json": {"prompt": "x", "video_format": "webm"}}, 400, "video_format"),
    "unknown id": ("GET", "/v1/videos/nosuchvideo", {}, 404, "video_id"),
    "unknown id's content": ("GET", "/v1/videos/nosuchvideo/content", {}, 404, "video_id"),
    "unknown content variant": ("GET", "/v1/videos/nosuchvideo/content?variant=poster", {}, 400, "variant"),
    "delete an unknown id": ("DELETE", "/v1/videos/nosuchvideo", {}, 404, "video_id"),
    "extend an unknown id": ("POST", "/v1/videos/extensions",
                             {"json": {"prompt": "x", "seconds": "4", "video": {"id": "nosuch"}}}, 404, "video"),
    "extend a video not made here": ("POST", "/v1/videos/extensions",
                                     form(prompt="x", seconds="4", video=("v.mp4", b"\0\0\0\x18ftypmp42", "video/mp4")),
                                     404, "video"),
    "remix an unknown id": ("POST", "/v1/videos/nosuch/remix", {"json": {"prompt": "x"}}, 404, "video_id"),
    "list after an unknown id": ("GET", "/v1/videos?after=nosuch", {}, 404, "after"),
    "list limit 0": ("GET", "/v1/videos?limit=0", {}, 400, "limit"),
}

STABILITY_CASES = {
    "oversized multipart": (form(image=("a.png", b"\0" * 2 * LIMIT, "image/png")), 413),
    "JSON instead of multipart": ({"json": {"seed": 0}}, 400),
    "a text file as image": (form(image=("a.png", b"just text", "image/png")), 400),
    "no image": (form(seed=0), 400),
    "seed that is no number": (form(image=("a.png", b"x", "image/png"), seed="abc"), 400),
    "two images": ({"files": [("image", ("a.png", b"x", "image/png")), ("image", ("b.png", b"y", "image/png"))]}, 400),
}


def leaks(text: str) -> bool:
    return any(marker in text for marker in ("Traceback", "/site-packages/", "/src/svd_", ".py\""))


@pytest.mark.parametrize("case", list(OPENAI_CASES))
def test_openai_videos_refuses_hostile_requests_in_openai_s_shape(gateway, case):
    method, path, request, status, param = OPENAI_CASES[case]
    before = stored(gateway)
    reply = httpx.request(method, gateway.url + path, headers={**AUTH, **request.pop("headers", {})}, timeout=30,
                          **request)
    error = reply.json()["error"]
    assert reply.status_code == status, reply.text
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert (param is None or error["param"] == param) and error["message"], error
    assert not leaks(reply.text) and stored(gateway) == before


@pytest.mark.parametrize("case", list(STABILITY_CASES))
def test_stability_refuses_hostile_requests_in_stability_s_shape(gateway, case):
    request, status = STABILITY_CASES[case]
    before = stored(gateway)
    reply = httpx.post(gateway.url + "/v2beta/image-to-video", headers=AUTH, timeout=30, **request)
    body = reply.json()
    assert reply.status_code == status, reply.text
    assert set(body) == {"id", "name", "errors"} and body["errors"] and all(isinstance(e, str) for e in body["errors"])
    assert not leaks(json.dumps(body)) and stored(gateway) == before
