"""Triton's administration is the operator's alone: the client key (SVD_TRITON_TOKEN) infers and reads model
contracts; loading (a load request may carry its own model.py, which would run on this host), unloading, the
repository index, logging, trace and shared memory take the admin key, over HTTP and over gRPC."""
import json
import subprocess
import sys

import pytest
import requests
import tritonclient.grpc as grpcclient

from tests.support import ADMIN_TOKEN, TOKEN
from tests.support.kserve import auth_headers, client, image_bytes, infer, refused, small
from tests.support.videos import decode_video

PROTOCOLS = ("http", "grpc")
INLINE_MODEL = "inline_probe"


def inline_model_files(marker) -> tuple[str, dict[str, bytes]]:
    """A Python-backend model sent inside a load request: its model.py writes `marker` when Triton imports it."""
    config = json.dumps({"name": INLINE_MODEL, "backend": "python", "max_batch_size": 0,
                         "input": [{"name": "X", "data_type": "TYPE_INT32", "dims": [1]}],
                         "output": [{"name": "Y", "data_type": "TYPE_INT32", "dims": [1]}]})
    model_py = (f"open({str(marker)!r}, 'w').write('ran')\n"
                "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n")
    return config, {"file:1/model.py": model_py.encode()}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("key", [None, TOKEN], ids=["no key", "client key"])
def test_a_client_key_cannot_load_code_or_unload_a_model(triton, protocol, key, tmp_path, sample_png):
    marker = tmp_path / "inline-model-ran"
    config, files = inline_model_files(marker)
    admin = client(triton, protocol)
    error = refused(lambda: admin.load_model(INLINE_MODEL, headers=auth_headers(protocol, key), config=config,
                                             files=files))
    assert "restricted" in error.message()
    error = refused(lambda: admin.unload_model("svd_xt", headers=auth_headers(protocol, key)))
    assert "restricted" in error.message()
    assert not marker.exists()  # no client code ran on the host
    assert admin.is_model_ready("svd_xt")  # nothing was unloaded
    video = infer(triton, protocol, small(IMAGE_BYTES=image_bytes(sample_png)), token=TOKEN)  # inference still works
    assert decode_video(video.as_numpy("VIDEO").reshape(-1)[0], "mp4").num_frames == 4


@pytest.mark.parametrize("key", [None, TOKEN], ids=["no key", "client key"])
def test_logging_trace_shared_memory_and_the_index_take_the_admin_key_over_http(triton, key):
    base = f"http://{triton.http_url}"
    headers = auth_headers("http", key) or {}
    calls = [("GET", "/v2/logging", None), ("POST", "/v2/logging", {"log_verbose_level": 1}),
             ("GET", "/v2/trace/setting", None), ("POST", "/v2/trace/setting", {"trace_level": ["TIMESTAMPS"]}),
             ("GET", "/v2/systemsharedmemory/status", None),
             ("POST", "/v2/systemsharedmemory/region/probe/register", {"key": "/probe", "offset": 0, "byte_size": 64}),
             ("GET", "/v2/cudasharedmemory/status", None), ("POST", "/v2/repository/index", None)]
    for method, path, body in calls:
        reply = requests.request(method, base + path, json=body, headers=headers, timeout=30)
        assert reply.status_code == 403 and "restricted" in reply.text, (method, path, reply.status_code, reply.text)
    admin = auth_headers("http", ADMIN_TOKEN)
    assert requests.get(base + "/v2/logging", headers=admin, timeout=30).json()["log_verbose_level"] == 0
    assert requests.get(base + "/v2/systemsharedmemory/status", headers=admin, timeout=30).status_code == 200


@pytest.mark.parametrize("key", [None, TOKEN], ids=["no key", "client key"])
def test_logging_trace_shared_memory_and_the_index_take_the_admin_key_over_grpc(triton, key):
    headers = auth_headers("grpc", key)
    with grpcclient.InferenceServerClient(triton.grpc_url) as admin:
        for call in (lambda: admin.get_log_settings(headers=headers),
                     lambda: admin.update_log_settings({"log_verbose_level": 1}, headers=headers),
                     lambda: admin.get_trace_settings(headers=headers),
                     lambda: admin.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}, headers=headers),
                     lambda: admin.get_system_shared_memory_status(headers=headers),
                     lambda: admin.register_system_shared_memory("probe", "/probe", 64, headers=headers),
                     lambda: admin.get_cuda_shared_memory_status(headers=headers),
                     lambda: admin.get_model_repository_index(headers=headers)):
            assert "restricted" in refused(call).message()
        assert admin.get_log_settings(headers=auth_headers("grpc", ADMIN_TOKEN), as_json=True)


def test_no_key_is_printed_by_dry_run_nor_written_to_the_server_log(triton):
    printed = subprocess.run([sys.executable, "-m", "svd_triton", "serve", "--dry-run", "--token", TOKEN,
                              "--admin-token", ADMIN_TOKEN], capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert "--http-restricted-api=" in printed.stdout and "Bearer ***" in printed.stdout
    for key in (TOKEN, ADMIN_TOKEN):
        assert key not in printed.stdout + printed.stderr
        assert key not in triton.log_path.read_text(errors="replace")


def test_the_client_key_is_refused_as_an_admin_key():
    done = subprocess.run([sys.executable, "-m", "svd_triton", "serve", "--dry-run", "--token", TOKEN,
                           "--admin-token", TOKEN], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "must differ" in done.stderr and TOKEN not in done.stderr
