"""fal's queue API (`fal-ai/fast-svd`, `fal-ai/fast-svd-lcm`, `fal-ai/stable-video`) on a real gateway over HTTPS
and a real Triton (streaming variant, tiny model), driven by the official `fal-client` unchanged. The client finds
the gateway through its own variables alone: FAL_KEY, FAL_QUEUE_RUN_HOST (read when `fal_client` is imported; the
client speaks https only), and SSL_CERT_FILE, which httpx reads when the client's pool is made, so it trusts this
test's own CA. Covered: subscribe with logs and queue updates, submit + status(with_logs) + result by id and by
handle, queue positions, cancel of a queued request and of a running one, refusals in fal's
`{"detail": [{loc, msg, type}]}` shape, the `Key` auth scheme, image_url as a data URI and as an http URL,
a client timeout, AsyncClient, and a plain script in a fresh process."""
from __future__ import annotations

import asyncio
import importlib
import json
import os
import ssl
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from PIL import Image

from svd_gateway import Settings
from tests.support import TOKEN, QuietHandler, encode_image, http_server, tls_files
from tests.support.gateways import Gateway
from tests.support.videos import decode_video

SMALL = {"width": 64, "height": 64, "num_frames": 4}
"""The contract's names for a small clip. fal's SVD apps have no size or frame count (always 25 frames)."""
LONG = {**SMALL, "steps": 100}
"""The most steps the contract allows: a request that is still running while a test looks at the queue."""
RETRIED = (408, 409, 429)
"""Statuses fal_client retries about 10 times over roughly 50 s: an answer meant as final must never use them."""
PNG = encode_image(Image.new("RGB", (64, 64), (10, 120, 200)))


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A CA of this test's own, and a certificate it issued for localhost: cert.pem (chain), key.pem, ca.pem."""
    return tls_files(tmp_path_factory.mktemp("fal-tls"))


class Images(QuietHandler):
    def do_GET(self):
        found = self.path == "/image.png"
        self.send_response(200 if found else 404)
        self.send_header("content-type", "image/png")
        self.send_header("content-length", str(len(PNG) if found else 0))
        self.end_headers()
        if found:
            self.wfile.write(PNG)


@pytest.fixture(scope="module")
def images():
    with http_server(Images) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(triton_stream, tls, tmp_path_factory):
    """HTTPS only. concurrency=1: while one request runs, the next waits IN_QUEUE (queue positions, cancelling a
    queued request). 127.0.0.1 is on the allow-list so that image_url may point at the `images` server."""
    settings = Settings(triton_url=triton_stream.grpc_url, token=TOKEN, data_dir=tmp_path_factory.mktemp("fal"),
                        tls_certfile=tls / "cert.pem", tls_keyfile=tls / "key.pem", concurrency=1,
                        webhook_allow=("127.0.0.1",))
    with Gateway(settings) as running:
        yield running


def fal_environment(gateway, tls) -> dict[str, str]:
    """What a user sets to point unchanged fal code at the gateway (fal_client sends https://{host}/...)."""
    return {"FAL_KEY": TOKEN, "FAL_QUEUE_RUN_HOST": f"localhost:{gateway.port}", "SSL_CERT_FILE": str(tls / "ca.pem"),
            "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1",
            "FAL_HOME_DIR": str(tls / "no-fal-login")}  # never a `fal auth login` token of the machine's user


@pytest.fixture(scope="module")
def fal(gateway, tls):
    """`fal_client` as a program that set only fal's variables before importing it would see it. The hosts are
    module constants, read at import, so the module is imported afresh after the variables are set; any copy
    imported earlier is put back afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in fal_environment(gateway, tls).items():
            patch.setenv(name, value)
        for name in ("SSL_CERT_DIR", "FAL_KEY_ID", "FAL_KEY_SECRET", "FAL_RUN_HOST", "FAL_FORCE_AUTH_BY_USER"):
            patch.delenv(name, raising=False)
        for name in [name for name in sys.modules if name.split(".")[0] == "fal_client"]:
            patch.delitem(sys.modules, name)
        module = importlib.import_module("fal_client")
        assert module.client.QUEUE_URL_FORMAT == f"https://localhost:{gateway.port}/"
        yield module
        for name in [name for name in sys.modules if name.split(".")[0] == "fal_client"]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def trusted(tls) -> ssl.SSLContext:
    """For the test's own requests: the video URLs the gateway hands out, and raw HTTP."""
    return ssl.create_default_context(cafile=str(tls / "ca.pem"))


@pytest.fixture(scope="module")
def photo(fal, sample_png) -> str:
    """The image as fal's own helper encodes it: a data URI (fal_client.encode; encode_file/encode_image alike)."""
    return fal.encode(sample_png, "image/png")


def download(result: dict, trusted) -> bytes:
    """The video a fal result points at, fetched the way a user would, checked against the result's File."""
    video = result["video"]
    assert set(video) >= {"url", "content_type", "file_name", "file_size"}, video
    reply = httpx.get(video["url"], verify=trusted, timeout=30)
    assert reply.status_code == 200, reply.text
    assert video["file_size"] == len(reply.content) and video["content_type"] == "video/mp4"
    assert video["file_name"].endswith(".mp4")
    return reply.content


def wait_for(check, fal, app, request_id, seconds=120, **status):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = fal.status(app, request_id, **status)
        if check(state):
            return state
        time.sleep(0.05)
    raise AssertionError(f"{app} {request_id} never reached the state asked for: {state}")


def completed(fal, app, request_id, **status):
    return wait_for(lambda state: isinstance(state, fal.Completed), fal, app, request_id, **status)


def test_subscribe_with_logs_reports_the_queue_and_progress_then_returns_the_video(fal, photo, trusted):
    updates, enqueued = [], []
    result = fal.subscribe("fal-ai/fast-svd", arguments={"image_url": photo, **SMALL, "steps": 8, "fps": 6, "seed": 7,
                                                         "motion_bucket_id": 100, "cond_aug": 0.05},
                           with_logs=True, on_enqueue=enqueued.append, on_queue_update=updates.append)
    assert set(result) == {"video", "seed"} and result["seed"] == 7
    decoded = decode_video(download(result, trusted), "mp4")
    assert (decoded.num_frames, decoded.size) == (4, (64, 64)) and decoded.fps == pytest.approx(6, abs=0.5)

    assert len(enqueued) == 1 and enqueued[0]
    kinds = [type(update).__name__ for update in updates]
    order = ["Queued", "InProgress", "Completed"]
    assert kinds[-1] == "Completed" and kinds == sorted(kinds, key=order.index), kinds  # never backwards
    assert kinds.count("Completed") == 1
    done = updates[-1]
    assert done.error is None and done.metrics["inference_time"] > 0
    shown = [update.logs for update in updates if isinstance(update, fal.InProgress)] or [[]]
    assert all(set(log) >= {"message", "level", "source", "timestamp"} for log in shown[-1] + done.logs)
    assert shown[-1] == done.logs[:len(shown[-1])]  # the lines shown while it ran stay, more follow
    messages = [log["message"] for log in done.logs]
    assert sum("denoising" in message for message in messages) >= 1 and "Using seed: 7" in messages, messages


def test_submit_then_status_with_logs_then_result_by_id_and_by_handle(fal, photo, trusted, gateway):
    app = "fal-ai/stable-video"  # no `steps` in fal's schema for it: the contract's own name keeps the work small
    handle = fal.submit(app, arguments={"image_url": photo, **SMALL, "num_inference_steps": 2, "fps": 8, "seed": 3})
    base = f"https://localhost:{gateway.port}/{app}/requests/{handle.request_id}"
    assert (handle.response_url, handle.status_url, handle.cancel_url) == (base, base + "/status", base + "/cancel")

    first = fal.status(app, handle.request_id, with_logs=True)
    assert isinstance(first, (fal.Queued, fal.InProgress, fal.Completed))
    done = completed(fal, app, handle.request_id, with_logs=True)
    assert done.error is None and done.logs and done.metrics["inference_time"] > 0
    assert isinstance(handle.status(), fal.Completed) and handle.status().logs is None  # the submit answer's URLs

    by_id = fal.result(app, handle.request_id)
    assert by_id == handle.get() and by_id["seed"] == 3
    decoded = decode_video(download(by_id, trusted), "mp4")
    assert (decoded.num_frames, decoded.size) == (4, (64, 64)) and decoded.fps == pytest.approx(8, abs=0.5)

    # status/result by id drop an endpoint's sub-path, as fal's docs say: the same request answers either way
    assert isinstance(fal.status(f"{app}/anything", handle.request_id), fal.Completed)


def test_a_request_is_found_under_its_own_app_only(fal, photo, gateway, trusted):
    handle = fal.submit("fal-ai/fast-svd-lcm", arguments={"image_url": photo, **SMALL, "steps": 1})
    for app in ("fal-ai/fast-svd", "fal-ai/stable-video"):
        with pytest.raises(fal.FalClientHTTPError) as missing:
            fal.status(app, handle.request_id)
        assert missing.value.status_code == 404 and missing.value.error_type == "not_found"
    completed(fal, "fal-ai/fast-svd-lcm", handle.request_id)
    auth = {"Authorization": f"Key {TOKEN}"}
    other = httpx.get(f"https://localhost:{gateway.port}/v1/predictions/{handle.request_id}", headers=auth,
                      verify=trusted, timeout=30)
    assert other.status_code == 404  # and another family's lookup finds no fal request
    for logs, shown in (("1", list), ("0", type(None))):  # fal's documented spelling; fal_client sends true/false
        reply = httpx.get(handle.status_url, params={"logs": logs}, headers=auth, verify=trusted, timeout=30)
        assert reply.status_code == 200 and isinstance(reply.json()["logs"], shown), reply.text


def test_a_queued_request_shows_its_position_and_cancelling_it_means_it_never_runs(fal, photo):
    app = "fal-ai/fast-svd"
    running = fal.submit(app, arguments={"image_url": photo, **LONG})
    wait_for(lambda state: isinstance(state, fal.InProgress), fal, app, running.request_id)
    queued = [fal.submit(app, arguments={"image_url": photo, **SMALL, "steps": 2}) for _ in range(2)]
    positions = [fal.status(app, handle.request_id) for handle in queued]
    assert positions == [fal.Queued(position=0), fal.Queued(position=1)]  # requests ahead in the queue

    fal.cancel(app, queued[0].request_id)  # any 2xx (fal: 202 CANCELLATION_REQUESTED)
    assert fal.status(app, queued[1].request_id) == fal.Queued(position=0)
    cancelled = queued[0].status(with_logs=True)
    assert isinstance(cancelled, fal.Completed) and cancelled.error  # fal: cancelled requests are COMPLETED too
    assert cancelled.error_type == "client_cancelled"
    with pytest.raises(fal.FalClientHTTPError) as refused:  # a cancelled request has no result
        queued[0].get()
    assert refused.value.status_code not in RETRIED and 400 <= refused.value.status_code < 500
    queued[0].cancel()  # finished already: nothing changes, and it is no error

    fal.cancel(app, queued[1].request_id)  # before the running one stops, so it is still queued
    running.cancel()  # in progress: the runner stops within a denoising step
    stopped = completed(fal, app, running.request_id, with_logs=True)
    assert stopped.error and stopped.error_type == "client_cancelled"
    assert not any("100/100" in log["message"] for log in stopped.logs)
    assert completed(fal, app, queued[1].request_id, with_logs=True).logs == []  # it never ran


@pytest.mark.parametrize("app, arguments, loc, named", [
    ("fast-svd", {"motion_bucket_id": 300}, ["body", "motion_bucket_id"], ""),
    ("fast-svd", {"cond_aug": 5.0}, ["body", "cond_aug"], ""),  # fal allows up to 10; noise_aug_strength stops at 1
    ("fast-svd", {"steps": 0}, ["body", "steps"], ""),
    ("fast-svd", {"deep_cache": "extreme"}, ["body", "deep_cache"], ""),
    ("fast-svd", {"frobnicate": 1}, ["body", "frobnicate"], ""),
    ("stable-video", {"steps": 2}, ["body", "steps"], ""),  # not in fal's schema of stable-video
    ("fast-svd", {"image_url": "data:image/png;base64,bm90IGFuIGltYWdl"}, ["body", "image_url"], ""),  # "not an image"
    ("fast-svd", {"image_url": None}, ["body", "image_url"], ""),
    # two names of one setting: the body's error (pydantic's model-level loc), naming the fields in its message
    ("fast-svd", {"deep_cache": "medium", "cache_interval": 2}, ["body"], "deep_cache"),
    ("fast-svd-lcm", {"steps": 2, "num_inference_steps": 2}, ["body"], "steps"),
])
def test_refusals_are_422_in_fals_detail_shape_naming_fals_field(fal, photo, app, arguments, loc, named):
    body = {key: value for key, value in {"image_url": photo, **SMALL, **arguments}.items() if value is not None}
    with pytest.raises(fal.FalClientHTTPError) as refused:
        fal.subscribe(f"fal-ai/{app}", arguments=body)
    assert refused.value.status_code == 422
    detail = refused.value.message  # fal_client hands over body["detail"] as is
    assert isinstance(detail, list) and detail, detail
    assert detail[0]["loc"] == loc and named in detail[0]["msg"] and detail[0]["type"], detail


def test_deep_cache_presets_run_and_lcm_takes_its_few_steps(fal, photo, trusted):
    fast = fal.subscribe("fal-ai/fast-svd", arguments={"image_url": photo, **SMALL, "steps": 6, "deep_cache": "high"})
    lcm = fal.subscribe("fal-ai/fast-svd-lcm", arguments={"image_url": photo, **SMALL, "steps": 2})
    for result in (fast, lcm):
        assert decode_video(download(result, trusted), "mp4").num_frames == 4


def test_the_key_is_sent_as_fal_sends_it_and_a_wrong_one_is_401(fal, photo, gateway, trusted):
    wrong = fal.SyncClient(key="not-the-token")  # `Authorization: Key not-the-token`
    with pytest.raises(fal.FalClientHTTPError) as refused:
        wrong.submit("fal-ai/fast-svd", arguments={"image_url": photo, **SMALL, "steps": 2})
    assert refused.value.status_code == 401 and isinstance(refused.value.message, str)  # the body's `detail`
    keyless = httpx.post(f"https://localhost:{gateway.port}/fal-ai/fast-svd", json={"image_url": photo},
                         verify=trusted, timeout=30)
    assert keyless.status_code == 401 and keyless.json()["detail"]


def test_an_unknown_app_is_404_and_a_webhook_is_refused_in_fals_shape(fal, photo):
    with pytest.raises(fal.FalClientHTTPError) as unknown:
        fal.submit("fal-ai/fast-sdxl", arguments={"image_url": photo})
    assert unknown.value.status_code == 404 and isinstance(unknown.value.message, str)
    with pytest.raises(fal.FalClientHTTPError) as hooked:
        fal.submit("fal-ai/fast-svd", arguments={"image_url": photo, **SMALL}, webhook_url="https://localhost:9/hook")
    assert hooked.value.status_code == 400 and "fal_webhook" in hooked.value.message


def test_a_client_timeout_sends_fals_timeout_header_and_cancels_the_request(fal, photo):
    """subscribe(client_timeout=N) sends `X-Fal-Request-Timeout: N` (start_timeout), and on expiry PUTs the
    cancel URL and raises FalClientTimeoutError naming the request; the request behind a long one is still
    queued then."""
    app = "fal-ai/fast-svd"
    ahead = fal.submit(app, arguments={"image_url": photo, **LONG})
    with pytest.raises(fal.FalClientTimeoutError) as expired:
        fal.subscribe(app, arguments={"image_url": photo, **SMALL, "steps": 2}, client_timeout=1.2)
    request_id = expired.value.request_id
    assert request_id
    ahead.cancel()
    stopped = completed(fal, app, request_id)
    assert stopped.error_type == "client_cancelled"  # cancelled, not finished
    completed(fal, app, ahead.request_id)


def test_image_url_may_be_an_http_url_the_allow_list_permits(fal, images, trusted):
    result = fal.subscribe("fal-ai/fast-svd", arguments={"image_url": f"{images}/image.png", **SMALL, "steps": 2})
    assert decode_video(download(result, trusted), "mp4").size == (64, 64)


def test_the_async_client_subscribes_too(fal, photo, trusted):
    updates = []

    async def main():
        return await fal.AsyncClient().subscribe("fal-ai/stable-video", arguments={
            "image_url": photo, **SMALL, "num_inference_steps": 2}, with_logs=True, on_queue_update=updates.append)

    result = asyncio.run(main())
    assert isinstance(updates[-1], fal.Completed)
    assert decode_video(download(result, trusted), "mp4").num_frames == 4


def test_a_plain_script_with_only_fals_variables_set_works_in_a_fresh_process(gateway, tls, tmp_path, sample_png,
                                                                               trusted):
    """No test machinery in the client's process: fal's README example, with a local file."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(sample_png)
    script = textwrap.dedent(f"""
        import json, fal_client
        result = fal_client.subscribe("fal-ai/fast-svd", with_logs=True, arguments={{
            "image_url": fal_client.encode_file({str(photo)!r}),
            "width": 64, "height": 64, "num_frames": 4, "steps": 2, "seed": 11}})
        print(json.dumps(result))
    """)
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("FAL_") and name not in ("SSL_CERT_DIR", "HTTPS_PROXY", "https_proxy")}
    done = subprocess.run([sys.executable, "-c", script], env={**environment, **fal_environment(gateway, tls)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["seed"] == 11
    assert decode_video(download(result, trusted), "mp4").num_frames == 4
