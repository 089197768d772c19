"""The launcher: it reports the server log when tritonserver exits or never becomes ready, and stops
cleanly on SIGTERM, loaded or still loading."""
import ctypes
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.support import cpu_config_copy, on_free_ports
from tests.support.waiting import until
from svd_triton.launcher import ServerStartError, TritonServer, free_port

HANGING_MODEL = '''
import time

class TritonPythonModel:
    def initialize(self, args):
        time.sleep(600)
'''


def test_times_out_with_the_server_log_when_never_ready(tmp_path):
    model = tmp_path / "repo" / "stuck" / "1"
    model.mkdir(parents=True)
    (model / "model.py").write_text(HANGING_MODEL)
    (model.parent / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 0\n'
                                               'instance_group [ { kind: KIND_CPU } ]\n'
                                               'input [ { name: "X", data_type: TYPE_FP32, dims: [ 1 ] } ]\n'
                                               'output [ { name: "Y", data_type: TYPE_FP32, dims: [ 1 ] } ]\n')
    server = TritonServer(on_free_ports(model_repository=tmp_path / "repo", models=()), ready_timeout=8)
    with pytest.raises(ServerStartError) as caught:
        server.start()
    message = str(caught.value)
    assert "not ready after 8 s" in message
    assert "tritonserver log" in message and "stuck" in message
    assert server.process.poll() is not None  # it was stopped, not left behind


BROKEN_CONTRACTS = {
    "missing": ('  { name: "IMAGE_BYTES", data_type: TYPE_STRING, dims: [ 1 ], optional: true },\n', "",
                "model 'svd_xt': config.pbtxt does not match model.py: input IMAGE_BYTES is not declared"),
    "retyped": ("input [\n", 'input [\n  { name: "FPS", data_type: TYPE_FP32, dims: [ 1 ], optional: true },\n',
                "model 'svd_xt': config.pbtxt declares FPS as TYPE_FP32, the contract makes it TYPE_INT32"),
}


@pytest.mark.parametrize("broken", BROKEN_CONTRACTS)
def test_exits_early_with_the_log_when_the_contract_is_broken(tmp_path, broken):
    """A declared tensor missing, or a parameter input retyped against svd_contract: the load fails naming it."""
    old, new, expected = BROKEN_CONTRACTS[broken]
    config = cpu_config_copy(tmp_path)
    assert old in config.read_text()
    config.write_text(config.read_text().replace(old, new, 1))
    with pytest.raises(ServerStartError) as caught:
        TritonServer(on_free_ports(model_repository=tmp_path / "repo"), ready_timeout=120).start()
    message = str(caught.value)
    assert "exited with code" in message
    assert expected in message


def _serve_cpu() -> tuple[subprocess.Popen, "queue.Queue[str]", int]:
    """`svd-triton serve` in a child process, its output lines in a queue, and its HTTP port."""
    http_port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "svd_triton", "serve", "--http-port", str(http_port),
                              "--grpc-port", str(free_port()), "--metrics-port", str(free_port()), "--config", "cpu",
                              "--svd-only"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in serve.stdout], daemon=True).start()
    return serve, lines, http_port


def _read_until(lines: "queue.Queue[str]", text: str, timeout: float) -> str:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        if text in seen[-1]:
            return "".join(seen)
    pytest.fail(f"svd-triton serve never printed {text!r} in {timeout:g} s:\n{''.join(seen)}")


def _kill(serve: subprocess.Popen) -> None:
    """The launcher, if still running, and its tritonserver and stubs (a session of their own, which killing
    the launcher alone would leave behind)."""
    try:
        launcher = psutil.Process(serve.pid)
        processes = [*launcher.children(recursive=True), launcher] if serve.poll() is None else []
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _stop_with_sigterm(serve: subprocess.Popen, lines: "queue.Queue[str]", http_port: int) -> str:
    """SIGTERM, then the exit code must be 0 and the server gone; returns the rest of the output."""
    try:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=60)
    finally:
        _kill(serve)
    output = _read_until(lines, "svd-triton serve: stopped", timeout=10)
    assert code == 0, output
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://localhost:{http_port}/v2/health/live", timeout=2)
    return output


def test_serve_forwards_sigterm_and_the_server_shuts_down_cleanly():
    serve, lines, http_port = _serve_cpu()
    _read_until(lines, "ready: HTTP", timeout=180)
    output = _stop_with_sigterm(serve, lines, http_port)
    assert "reload" not in output  # stubs exiting in a shutdown are not crashes for the watchdog to repair


def test_a_sigterm_that_another_thread_receives_is_forwarded_too():
    """The kernel hands a process-directed signal to any thread that does not block it; with the launcher's
    gRPC and watchdog threads running, that is often not the main thread, which must still act on it."""
    serve, lines, http_port = _serve_cpu()
    _read_until(lines, "ready: HTTP", timeout=180)
    others = [thread.id for thread in psutil.Process(serve.pid).threads() if thread.id != serve.pid]
    assert others, "the launcher runs helper threads once the server is ready"
    try:
        # To the newest helper thread that still exists (one may end between the listing and the signal).
        libc = ctypes.CDLL(None, use_errno=True)
        assert any(libc.tgkill(serve.pid, thread, signal.SIGTERM) == 0 for thread in reversed(others))
        code = serve.wait(timeout=60)
    finally:
        _kill(serve)
    assert code == 0, _read_until(lines, "svd-triton serve: stopped", timeout=10)


@pytest.mark.parametrize("moment", ["starting", "loading"])
def test_sigterm_while_the_model_loads_stops_cleanly_too(moment):
    """A pod terminated during a minutes-long load (compilation on a GPU) is a requested stop, not a failure;
    so is one terminated as the launcher starts, before tritonserver exists to forward the signal to."""
    serve, lines, http_port = _serve_cpu()
    started = _read_until(lines, "starting tritonserver", timeout=30)
    if moment == "loading":
        log = Path(re.search(r"\(log: (.+?)\)", started).group(1))
        until(lambda: log.is_file() and "loading: svd_xt" in log.read_text(), "tritonserver loading svd_xt")
    output = _stop_with_sigterm(serve, lines, http_port)
    assert "ready:" not in output and "Error" not in output


def test_a_killed_server_leaves_nothing_in_dev_shm(tmp_path):
    from svd_triton.launcher import SHM_FOLDER, SHM_PREFIX

    dead_launcher = subprocess.Popen(["true"])
    dead_launcher.wait()  # a pid that no longer runs: its launcher's leftovers are fair game
    stale = SHM_FOLDER / f"{SHM_PREFIX}_{dead_launcher.pid}_8001_1"
    stale.write_bytes(b"left by a killed server")
    server = TritonServer(on_free_ports(), ready_timeout=240).start()
    try:
        assert not stale.exists()
        regions = sorted(SHM_FOLDER.glob(server.shm_prefix + "*"))
        assert regions, "the Python backend's regions carry this server's prefix"
        os.killpg(server.process.pid, signal.SIGKILL)  # no finalize, no clean shutdown
        server.process.wait()
        assert all(region.exists() for region in regions)
    finally:
        server.stop()
    assert not list(SHM_FOLDER.glob(server.shm_prefix + "*"))


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("ending", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL, "a stub restarted, then SIGTERM"])
def test_no_tritonserver_or_stub_outlives_serve_however_it_ends(ending):
    """Counted: tritonserver and its stubs (the ones of the end, a restarted stub included) once `svd-triton serve`
    has ended. A SIGKILLed launcher can do nothing itself: tritonserver gets SIGTERM as its parent dies
    (PR_SET_PDEATHSIG), and its stubs end with it."""
    serve, lines, _ = _serve_cpu()
    try:
        _read_until(lines, "ready: HTTP", timeout=180)
        [server] = psutil.Process(serve.pid).children()
        if ending == "a stub restarted, then SIGTERM":
            [stub] = [child for child in server.children() if child.name().startswith("triton_python")]
            stub.kill()
            _read_until(lines, "reloading svd_xt", timeout=180)
            until(lambda: [child.pid for child in server.children()
                           if child.name().startswith("triton_python") and _alive(child)] not in ([], [stub.pid]),
                  "the stub restarted", seconds=120)
        family = [server, *server.children(recursive=True)]
        assert sum(map(_alive, family)) >= 2  # tritonserver and a stub at least
        serve.send_signal(signal.SIGTERM if isinstance(ending, str) else ending)
        serve.wait(timeout=90)
        until(lambda: sum(map(_alive, family)) == 0, "tritonserver and its stubs to end", seconds=90)
    finally:
        _kill(serve)


def test_a_model_whose_process_dies_and_cannot_be_reloaded_ends_serve_with_an_error(tmp_path):
    """Triton would go on answering ready with the model dead behind it; the launcher ends instead (exit code 3),
    so the pod or service manager starts it again. The reload is made to fail by breaking the model's code after
    the start, as a bad rollout of the repository would."""
    repository = cpu_config_copy(tmp_path).parents[2]
    serve = subprocess.Popen([sys.executable, "-m", "svd_triton", "serve", "--model-repository", str(repository),
                              "--http-port", str(free_port()), "--grpc-port", str(free_port()),
                              "--metrics-port", str(free_port()), "--config", "cpu", "--svd-only"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in serve.stdout], daemon=True).start()
    try:
        _read_until(lines, "ready: HTTP", timeout=180)
        model = repository / "svd_xt" / "1" / "model.py"
        model.write_text(model.read_text() + "\nraise RuntimeError('a broken rollout')\n")
        [server] = psutil.Process(serve.pid).children()
        [stub] = [child for child in server.children() if child.name().startswith("triton_python")]
        stub.kill()
        output = _read_until(lines, "could not be reloaded", timeout=120)
        assert serve.wait(timeout=60) == 3 and "reload failed" in output
    finally:
        _kill(serve)
