"""Each API family's errors in its own shape and status: an invalid body, an unknown id, the guard's 401 on the
family's paths, an unrouted path under its prefix, and a model error on the synchronous routes. The SDKs raise
their typed errors from these shapes (replicate: title/detail/status; openai: error.param/code; Stability:
id/name/errors), so a shape gone wrong breaks clients however right the status. In-process, without Triton."""
from __future__ import annotations

import base64

import pytest
import requests

from svd_triton import DeadlineExceededError, InvalidRequestError, ServerError, UnauthorizedError
from svd_triton.launcher import free_port
from tests.support import TOKEN
from tests.support.fake_model import gateway_on

SLUG = "stabilityai-stable-video-diffusion"


@pytest.fixture
def failing(fake):
    """The fake, set back to answering once the test is done."""
    yield fake
    fake.failure = None


@pytest.fixture(scope="module")
def image_uri(sample_png):
    return "data:image/png;base64," + base64.b64encode(sample_png).decode()


def house(reply, status: int, code: str, field: str | None = None) -> str:
    """The house shape (Replicate, TIR, Forge, OpenAI-style, files); its message."""
    body = reply.json()
    assert reply.status_code == status, reply.text
    assert set(body) == {"error", "title", "detail", "status"}
    assert (body["status"], body["title"], body["error"]["code"]) == (status, code.replace("_", " "), code)
    assert body["detail"] == body["error"]["message"] and body["error"].get("field") == field
    return body["detail"]


def openai(reply, status: int, code: str, param: str | None) -> str:
    """OpenAI's shape (the Videos API); its message."""
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(reply.json()) == {"error"} and set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    return error["message"]


def stability(reply, status: int, name: str) -> str:
    """Stability's shape; its one message."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"id", "name", "errors"} and len(body["id"]) == 32 and body["name"] == name
    [message] = body["errors"]
    return message


def test_replicate_invalid_input_is_422_naming_the_field(client, image_uri):
    unknown = client.post("/v1/predictions", json={"input": {"input_image": image_uri, "frobnicate": 1}})
    assert house(unknown, 422, "invalid_input", "input.frobnicate") == "unknown field: input.frobnicate"
    both = client.post("/v1/predictions", json={"input": {"input_image": image_uri, "fps": 8, "frames_per_second": 8}})
    assert "name the same setting" in house(both, 422, "invalid_input", "input.frames_per_second")
    out_of_range = client.post("/v1/predictions", json={"input": {"image": image_uri, "num_inference_steps": 500}})
    house(out_of_range, 422, "invalid_input", "input.num_inference_steps")
    malformed = client.post("/v1/predictions", content=b'{"input": ', headers={"Content-Type": "application/json"})
    assert (malformed.status_code, malformed.json()["detail"]) == (422, "body: not valid JSON")


def test_replicate_bad_prefer_wait_is_400_naming_the_header(client, image_uri):
    reply = client.post("/v1/predictions", json={"input": {"image": image_uri}}, headers={"Prefer": "wait=forever"})
    assert "Prefer: wait=N" in house(reply, 400, "invalid_request", "Prefer")


@pytest.mark.parametrize("path,body,field", [
    ("/predict", {"image": "%%%" * 10}, "image"),
    ("/predict", {"num_frames": 4}, "image"),
    (f"/v1/inference/{SLUG}", {"prompt": "x", "num_frames": "four"}, "num_frames"),
    ("/v1/video/generations", {"prompt": "x", "response_format": "xml"}, "response_format"),
])
def test_house_families_refuse_an_invalid_body_with_400_naming_the_field(client, path, body, field):
    house(client.post(path, json=body), 400, "invalid_request", field)


def test_tir_s_named_route_refuses_an_invalid_body_with_422_naming_the_field(client):
    house(client.post("/v1/models/svd-xt:predict", json={"image": "aGVsbG8=", "fps": 0}), 422, "invalid_input", "fps")


def test_openai_videos_invalid_body_is_400_in_openai_s_shape(client, image_uri):
    openai(client.post("/v1/videos", json={"prompt": "x", "frobnicate": 1}), 400, "invalid_request", "frobnicate")
    openai(client.post("/v1/videos", json={"prompt": "x", "seconds": "5"}), 400, "invalid_value", "seconds")
    openai(client.post("/v1/videos", json={"prompt": "x", "size": "64x64", "width": 64}), 400, "invalid_value", "size")
    wrong_type = client.post("/v1/videos", content=b"prompt=x", headers={"Content-Type": "text/plain"})
    assert "Content-Type 'text/plain'" in openai(wrong_type, 400, "invalid_request", "body")


def test_stability_invalid_requests_are_400_in_stability_s_shape(client, sample_png):
    as_json = client.post("/v2beta/image-to-video", json={"cfg_scale": 1.8})
    assert "multipart/form-data" in stability(as_json, 400, "bad_request")
    no_image = client.post("/v2beta/image-to-video", files={"other": ("a.txt", b"x", "text/plain")},
                           data={"cfg_scale": "1.8"})
    assert stability(no_image, 400, "bad_request").startswith("other: a file is not accepted")
    too_strong = client.post("/v2beta/image-to-video", files={"image": ("image.png", sample_png, "image/png")},
                             data={"cfg_scale": "11"})
    assert stability(too_strong, 400, "bad_request").startswith("cfg_scale:")


def test_files_upload_without_content_is_400(client):
    house(client.post("/v1/files", data={"metadata": "{}"}), 400, "invalid_request", "content")


@pytest.mark.parametrize("method,path,shape,field", [
    ("GET", "/v1/predictions/nope", "house", None),
    ("POST", "/v1/predictions/nope/cancel", "house", None),
    ("GET", "/v1/files/nope", "house", None),
    ("DELETE", "/v1/files/nope", "house", None),
    ("GET", "/v1/outputs/nope.mp4", "house", None),
    ("GET", "/v1/models/other-model/run-estimate", "house", "slug"),
    ("GET", "/v1/videos/nope", "openai", "video_id"),
    ("DELETE", "/v1/videos/nope", "openai", "video_id"),
    ("GET", "/v1/videos/nope/content", "openai", "video_id"),
    ("POST", "/v1/videos/nope/remix", "openai", "video_id"),
    ("GET", "/v2beta/image-to-video/result/nope", "stability", None),
])
def test_an_unknown_id_is_404_in_the_family_s_shape(client, method, path, shape, field):
    reply = client.request(method, path, json={"prompt": "again"} if path.endswith("remix") else None)
    if shape == "house":
        house(reply, 404, "not_found", field)
    elif shape == "openai":
        assert "no such video" in openai(reply, 404, "not_found", field)
    else:
        assert stability(reply, 404, "not_found") == "no generation found for id nope"


def test_forge_inference_of_another_model_is_404_naming_the_slug(client, image_uri):
    reply = client.post("/v1/inference/other-model", json={"image": image_uri})
    assert SLUG in house(reply, 404, "not_found", "slug")


def test_one_family_s_job_is_not_found_under_another_s_routes(client, image_uri):
    prediction = client.post("/v1/predictions", json={"input": {"image": image_uri}}).json()["id"]
    openai(client.get(f"/v1/videos/{prediction}"), 404, "not_found", "video_id")
    stability(client.get(f"/v2beta/image-to-video/result/{prediction}"), 404, "not_found")
    assert client.get(f"/v1/predictions/{prediction}").status_code == 200


@pytest.mark.parametrize("path,shape", [
    ("/v1/videos/abc/unknown", "openai"),
    ("/v2beta/text-to-video", "stability"),
    ("/v1/nothing-here", "house"),
])
def test_an_unrouted_path_is_404_in_the_shape_of_the_family_whose_prefix_it_has(client, path, shape):
    reply = client.get(path)
    {"openai": lambda: openai(reply, 404, "not_found", None), "stability": lambda: stability(reply, 404, "not_found"),
     "house": lambda: house(reply, 404, "not_found")}[shape]()


def test_a_method_a_path_does_not_serve_is_405_listing_the_ones_it_does(client):
    reply = client.put("/v1/predictions")
    house(reply, 405, "method_not_allowed")
    assert reply.headers["Allow"] == "GET, POST"


GUARDED_PATHS = [
    ("POST", "/v1/predictions", "house"),
    ("GET", "/v1/predictions/anything", "house"),
    ("GET", "/v1/webhooks/default/secret", "house"),
    ("POST", "/v1/files", "house"),
    ("POST", "/predict", "house"),
    ("POST", "/v1/models/svd-xt:predict", "house"),
    ("POST", f"/v1/inference/{SLUG}", "house"),
    ("POST", f"/v1/model-families/{SLUG}/start", "house"),
    ("POST", "/v1/video/generations", "house"),
    ("POST", "/v1/videos", "openai"),
    ("GET", "/v1/videos/anything/content", "openai"),
    ("POST", "/v2beta/image-to-video", "stability"),
    ("GET", "/v2beta/image-to-video/result/anything", "stability"),
]


@pytest.mark.parametrize("authorization", ["", "Bearer wrong-key", f"Basic {TOKEN}"])
@pytest.mark.parametrize("method,path,shape", GUARDED_PATHS)
def test_the_guard_s_401_is_in_the_shape_of_the_family_whose_path_it_is(client, fake, method, path, shape,
                                                                        authorization):
    before = len(fake.calls)
    reply = client.request(method, path, headers={"Authorization": authorization}, json={})
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    if shape == "house":
        house(reply, 401, "unauthorized")
    elif shape == "openai":
        openai(reply, 401, "invalid_api_key", None)
    else:
        stability(reply, 401, "unauthorized")
    assert len(fake.calls) == before


def test_the_key_scheme_is_let_in_and_public_paths_need_no_key(client):
    assert client.get("/v1/predictions", headers={"Authorization": f"Key {TOKEN}"}).status_code == 200
    for path in ("/healthz", "/openapi.json", "/v1/parameters"):
        assert client.get(path, headers={"Authorization": ""}).status_code == 200, path


@pytest.mark.parametrize("error,status,code", [
    (InvalidRequestError("NUM_FRAMES: 40 is over this deployment's max_num_frames (16)", field="num_frames"),
     400, "invalid_request"),
    (DeadlineExceededError("no answer within the client's timeout"), 504, "deadline_exceeded"),
    (UnauthorizedError("the model server refused the gateway's key"), 502, "unauthorized"),
    (ServerError("CUDA out of memory"), 502, "server_error"),
])
@pytest.mark.parametrize("path,body", [
    ("/predict", {}),
    (f"/v1/inference/{SLUG}", {}),
    ("/v1/video/generations", {"response_format": "url"}),
])
def test_a_model_error_on_a_synchronous_route_is_its_status_with_the_model_s_message(client, failing, image_uri,
                                                                                      error, status, code, path, body):
    failing.failure = error
    reply = client.post(path, json={"image": image_uri, **body})
    assert house(reply, status, code, error.field) == str(error)


def test_health_is_the_model_s_readiness(client, fake):
    assert client.get("/healthz").json() == {"triton_ready": True}
    fake.is_ready = False
    try:
        reply = client.get("/healthz")
    finally:
        fake.is_ready = True
    assert (reply.status_code, reply.json()) == (503, {"triton_ready": False})


def test_metrics_need_an_admin_key_on_the_api_port_and_none_on_the_metrics_listener(fake, tmp_path):
    port = free_port()
    with gateway_on(fake, tmp_path, metrics_listen=f"127.0.0.1:{port}") as client:
        assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
        assert client.get("/metrics").status_code == 200  # the test key is the bootstrap key: admin scope
        scraped = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert scraped.status_code == 200 and "svd_gateway_queue_depth" in scraped.text
    with pytest.raises(requests.ConnectionError):  # stopped with the gateway
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)


def test_readiness_is_the_gateway_s_own_whatever_triton_s_state(client, fake):
    fake.is_ready = False
    try:
        reply = client.get("/readyz", headers={"Authorization": ""})
    finally:
        fake.is_ready = True
    assert (reply.status_code, reply.json()) == (200, {"ready": True, "triton_ready": False})
