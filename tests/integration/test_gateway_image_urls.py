"""Image URLs (OpenAI's `input_reference.image_url`, a prediction's `input_image`) are fetched by the gateway only
within its allow-list, the same one webhooks obey: a real HTTP server on 127.0.0.1, allowed here by settings,
serves images, redirects and slow or oversized answers; a host the allow-list refuses is never contacted. Refusals
are 4xx in the family's error shape naming the field. Triton is down: these requests are judged before it."""
from __future__ import annotations

import hashlib
import time

import httpx
import pytest
from PIL import Image

from svd_gateway import Settings
from svd_gateway.blobs import FolderBlobs
from svd_gateway.store import Store
from svd_triton.launcher import free_port
from tests.support import TOKEN, QuietHandler, encode_image, http_server
from tests.support.gateways import Gateway

AUTH = {"Authorization": f"Bearer {TOKEN}"}
PNG = encode_image(Image.new("RGB", (64, 64), (10, 120, 200)))
LIMIT = 256 * 1024
METADATA_SERVICE = "http://169.254.169.254/latest/meta-data/"
"""Link-local: the classic target of a server-side request forgery."""


class Images(QuietHandler):
    """/image.png, /redirect?to=URL (302), /large (over LIMIT), /slow (never finishes in time)."""

    requests: list[str] = []

    def do_GET(self):
        Images.requests.append(self.path)
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("location", self.path.split("=", 1)[1])
            self.end_headers()
            return
        body = {"/image.png": PNG, "/large": b"\0" * (4 * LIMIT), "/slow": PNG}.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-type", "image/png")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.path == "/slow":
            time.sleep(30)
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    with http_server(Images) as url:
        yield url


def gateway_with(tmp_path_factory, allow: tuple[str, ...]) -> Gateway:
    return Gateway(Settings(triton_url=f"127.0.0.1:{free_port()}", token=TOKEN, webhook_allow=allow, fetch_seconds=3,
                            max_body_bytes=LIMIT, data_dir=tmp_path_factory.mktemp("urls")))


@pytest.fixture(scope="module")
def allowed(tmp_path_factory):
    with gateway_with(tmp_path_factory, ("127.0.0.1",)) as running:
        yield running


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    with gateway_with(tmp_path_factory, ()) as running:
        yield running


def create_video(gateway, url: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/videos", headers=AUTH, timeout=30,
                      json={"prompt": "from a URL", "input_reference": {"image_url": url}, "size": "64x64"})


def create_prediction(gateway, url: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/predictions", headers=AUTH, timeout=30, json={"input": {"input_image": url}})


def job_image(gateway, job_id: str) -> str:
    """The SHA-256 of the image the stored job was made from (its input, kept with it)."""
    store = Store(gateway.settings.database, FolderBlobs(gateway.settings.data_dir))
    try:
        job = store.get(job_id)
    finally:
        store.close()
    assert job is not None, job_id
    return job.image_sha256


def test_an_allowed_url_is_fetched_for_a_video_and_a_prediction(allowed, server):
    Images.requests.clear()
    video = create_video(allowed, f"{server}/redirect?to={server}/image.png")  # a redirect within the allow-list
    assert video.status_code == 200 and video.json()["status"] == "queued", video.text
    assert job_image(allowed, video.json()["id"]) == hashlib.sha256(PNG).hexdigest()
    prediction = create_prediction(allowed, f"{server}/image.png")
    assert prediction.status_code == 201 and prediction.json()["input"]["input_image"] == f"{server}/image.png"
    assert Images.requests == ["/redirect?to=" + f"{server}/image.png", "/image.png", "/image.png"]


@pytest.mark.parametrize(("path", "reason"), [
    (f"/redirect?to={METADATA_SERVICE}", "169.254.169.254 is a private, loopback or reserved address"),
    ("/large", f"it is over {LIMIT} bytes"),
    ("/slow", "no complete answer within 3 s"),
    ("/missing.png", "it answered HTTP 404"),
])
def test_fetches_that_break_a_rule_are_refused_naming_the_field(allowed, server, path, reason):
    video = create_video(allowed, server + path)
    assert video.status_code == 400 and reason in video.json()["error"]["message"], video.text
    assert video.json()["error"]["param"] == "input_reference.image_url"
    prediction = create_prediction(allowed, server + path)
    assert prediction.status_code == 422 and reason in prediction.json()["error"]["message"], prediction.text
    assert prediction.json()["error"]["field"] == "input.input_image"


# Loopback on the discard port: nothing listens there, and the refusal must come before any connection anyway.
@pytest.mark.parametrize("url", ["http://127.0.0.1:9/image.png", METADATA_SERVICE, "http://[::1]/a.png"])
def test_hosts_outside_the_allow_list_are_refused_without_a_connection(default, server, url):
    Images.requests.clear()
    for reply, field in ((create_video(default, url), "input_reference.image_url"),
                         (create_prediction(default, url), "input.input_image")):
        assert reply.status_code in (400, 422) and "allow-list" in reply.text and field in reply.text, reply.text
    assert create_video(default, f"{server}/image.png").status_code == 400 and Images.requests == []
    assert httpx.get(f"{default.url}/v1/files", headers=AUTH, timeout=30).json()["results"] == []
