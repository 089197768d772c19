"""The gateway's trust boundaries, against real gateways (no Triton needed: nothing here generates): Prefer: wait
refused unless a finite 0…max, public paths matched exactly, a webhook URL's query string shown only to the key
that created the job, no keyless start on a reachable address, and HTTPS from a certificate and key."""
from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys

import pytest
import requests

from tests.support import TOKEN, encode_image, tls_files
from tests.support.gateways import Gateway, GatewayProcess
from svd_gateway import Settings
from svd_gateway.accounts import key_digest, new_key
from svd_gateway.blobs import FolderBlobs
from svd_gateway.store import ApiKey, Store, utcnow
from svd_triton.launcher import free_port
from PIL import Image

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings(data_dir, **overrides) -> Settings:
    """A gateway whose Triton is nowhere: jobs fail when run, everything before that is real."""
    return Settings(**{"triton_url": f"127.0.0.1:{free_port()}", "token": TOKEN, "data_dir": data_dir,
                       "webhook_attempts": 1, **overrides})


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with Gateway(settings(tmp_path_factory.mktemp("boundaries"))) as running:
        yield running


def prediction_body(**extra) -> dict:
    png = base64.b64encode(encode_image(Image.new("RGB", (64, 64), (200, 30, 30)))).decode()
    return {"input": {"input_image": f"data:image/png;base64,{png}"}, **extra}


@pytest.mark.parametrize("prefer", ["wait=nan", "wait=NaN", "wait=inf", "wait=-inf", "wait=-1", "wait=61",
                                    "wait=1e400", "wait=soon"])
def test_prefer_wait_takes_a_finite_number_of_seconds_up_to_the_maximum(gateway, prefer):
    reply = requests.post(f"{gateway.url}/v1/predictions", json=prediction_body(), timeout=30,
                          headers={**AUTH, "Prefer": prefer})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["field"] == "Prefer" and "from 0 to 60" in error["message"]
    listed = requests.get(f"{gateway.url}/v1/predictions", headers=AUTH, timeout=30).json()["results"]
    assert listed == []  # refused before a job existed


@pytest.mark.parametrize("path", ["/metrics-admin", "/docs-private", "/healthz/x", "/openapi.json.bak",
                                  "/v1/parameters/all", "/playground/a/b", "/v1/outputs/", "/v1/outputs/a/b",
                                  "/redocs"])
def test_paths_that_only_start_like_public_ones_need_the_key(gateway, path):
    reply = requests.get(gateway.url + path, timeout=30)
    assert reply.status_code == 401, (path, reply.status_code)


@pytest.mark.parametrize("path, status", [("/", 200), ("/openapi.json", 200), ("/v1/parameters", 200),
                                          ("/docs", 200), ("/v1/outputs/nothing.mp4", 404),
                                          ("/playground/missing.js", 404)])
def test_public_paths_need_no_key(gateway, path, status):
    assert requests.get(gateway.url + path, timeout=30).status_code == status, path


def test_a_webhook_url_is_its_owner_s_alone_and_never_logged(tmp_path, caplog):
    hook = f"http://user:pass@127.0.0.1:{free_port()}/hook?token=hook-secret-1&x=2#fragment"
    configured = settings(tmp_path, webhook_allow=("127.0.0.1",))
    with caplog.at_level(logging.DEBUG), Gateway(configured) as gateway:
        created = requests.post(f"{gateway.url}/v1/predictions", json=prediction_body(webhook=hook), headers=AUTH,
                                timeout=30)
        assert created.status_code == 201, created.text
        job = created.json()["id"]
        assert created.json()["webhook"] == hook
        assert requests.get(f"{gateway.url}/v1/predictions/{job}", headers=AUTH, timeout=30).json()["webhook"] == hook
        store = Store(configured.database, FolderBlobs(tmp_path))
        other = new_key()
        store.add_key(ApiKey(name="other", digest=key_digest(other), prefix=other[:12], owner="other",
                             scopes=["generate"], created_at=utcnow()))
        store.close()
        others = {"Authorization": f"Bearer {other}"}
        assert requests.get(f"{gateway.url}/v1/predictions/{job}", headers=others, timeout=30).status_code == 404
        assert requests.get(f"{gateway.url}/v1/predictions", headers=others, timeout=30).json()["results"] == []
    assert "hook-secret-1" not in caplog.text and "pass@" not in caplog.text


def gateway_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "svd_triton", "gateway", "--port", str(free_port()), *args]


def test_a_gateway_without_a_key_does_not_start_on_a_reachable_address(tmp_path):
    env = {name: value for name, value in os.environ.items() if name != "SVD_TRITON_TOKEN"}
    done = subprocess.run(gateway_command("--host", "0.0.0.0", "--data-dir", str(tmp_path)), env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "not started: no key" in done.stderr and "--no-auth" in done.stderr
    done = subprocess.run(gateway_command("--tls-certfile", str(tmp_path / "cert.pem"), "--token", TOKEN),
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--tls-keyfile" in done.stderr


@pytest.mark.parametrize("args", [("--host", "0.0.0.0", "--no-auth"), ("--host", "127.0.0.1")],
                         ids=["no-auth", "loopback"])
def test_a_keyless_gateway_says_so_loudly(tmp_path, monkeypatch, args):
    monkeypatch.delenv("SVD_TRITON_TOKEN", raising=False)
    log = tmp_path / "gateway.log"
    gateway = GatewayProcess(*args, "--data-dir", str(tmp_path), log=log).start()
    try:
        assert requests.get(f"{gateway.url}/v1/predictions", timeout=30).status_code == 200  # open, as told
    finally:
        gateway.stop()
    assert "NO KEY: every route is open" in log.read_text()


def test_the_gateway_serves_https_from_a_certificate_and_key(tmp_path):
    tls_files(tmp_path)
    with Gateway(settings(tmp_path, tls_certfile=tmp_path / "cert.pem", tls_keyfile=tmp_path / "key.pem")) as gateway:
        secure = f"https://localhost:{gateway.port}"
        assert requests.get(f"{secure}/v1/parameters", verify=tmp_path / "ca.pem", timeout=30).status_code == 200
        assert "<html" in requests.get(f"{secure}/", verify=tmp_path / "ca.pem", timeout=30).text.lower()
        listed = requests.get(f"{secure}/v1/predictions", headers=AUTH, verify=tmp_path / "ca.pem", timeout=30)
        assert listed.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):  # a certificate nobody vouched for
            requests.get(f"{secure}/v1/parameters", timeout=30)
        with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP is not spoken there
            requests.get(f"http://localhost:{gateway.port}/v1/parameters", timeout=30)
