"""The launcher: it reports the server log when tritonserver exits or never becomes ready."""
import shutil

import pytest

from conftest import ROOT
from svd_triton.server import ServerOptions, ServerStartError, TritonServer, free_port

HANGING_MODEL = '''
import time

class TritonPythonModel:
    def initialize(self, args):
        time.sleep(600)
'''


def _options(repository):
    return ServerOptions(model_repository=repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())


def test_times_out_with_the_server_log_when_never_ready(tmp_path):
    model = tmp_path / "repo" / "stuck" / "1"
    model.mkdir(parents=True)
    (model / "model.py").write_text(HANGING_MODEL)
    (model.parent / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 0\n'
                                               'instance_group [ { kind: KIND_CPU } ]\n'
                                               'input [ { name: "X", data_type: TYPE_FP32, dims: [ 1 ] } ]\n'
                                               'output [ { name: "Y", data_type: TYPE_FP32, dims: [ 1 ] } ]\n')
    server = TritonServer(_options(tmp_path / "repo"), ready_timeout=8)
    with pytest.raises(ServerStartError) as caught:
        server.start()
    message = str(caught.value)
    assert "not ready after 8 s" in message
    assert "tritonserver log" in message and "stuck" in message
    assert server.process.poll() is not None  # it was stopped, not left behind


def test_exits_early_with_the_log_when_the_contract_is_broken(tmp_path):
    repository = tmp_path / "repo"
    shutil.copytree(ROOT / "model_repository", repository, ignore=shutil.ignore_patterns("__pycache__"))
    config = repository / "svd_xt" / "configs" / "cpu.pbtxt"
    config.write_text(config.read_text().replace('  { name: "FPS", data_type: TYPE_INT32, dims: [ 1 ], optional: true },\n', ""))
    with pytest.raises(ServerStartError) as caught:
        TritonServer(_options(repository), ready_timeout=120).start()
    message = str(caught.value)
    assert "exited with code" in message
    assert "model 'svd_xt': config.pbtxt does not match model.py: input FPS is not declared" in message


def test_serve_forwards_sigterm_and_the_server_shuts_down_cleanly(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    http_port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "svd_triton", "serve", "--http-port", str(http_port),
                              "--grpc-port", str(free_port()), "--metrics-port", str(free_port()), "--config", "cpu"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://localhost:{http_port}/v2/health/ready", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("svd-triton serve never became ready")
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    finally:
        serve.kill()
    output = serve.stdout.read()
    assert "ready: HTTP" in output
    assert "reload" not in output  # stubs exiting in a shutdown are not crashes for the watchdog to repair
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://localhost:{http_port}/v2/health/live", timeout=2)
