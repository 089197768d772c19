"""Faults on the real server: the Python-backend process killed in the middle of a request."""
import os
import signal
import threading
import time

import pytest

from tests.support import TOKEN, start_server
from svd_triton import ServerError, SVDClient
from svd_triton.launcher import backend_stub_pids
from tests.support.videos import decode_video

SMALL = {"width": 64, "height": 64, "num_frames": 2, "num_inference_steps": 1}


@pytest.mark.slow
def test_killed_backend_process_fails_its_request_then_the_model_is_reloaded(sample_png):
    with start_server(models=("svd_xt",)) as server:  # one model, so its stub is the one backend process
        assert len(backend_stub_pids(server.process.pid)) == 1
        outcome = {}

        def long_request():
            with SVDClient(server.grpc_url, protocol="grpc", token=TOKEN, timeout=120) as svd:
                try:
                    outcome["result"] = svd.generate(sample_png, num_inference_steps=60)
                except Exception as error:
                    outcome["error"] = error

        caller = threading.Thread(target=long_request)
        caller.start()
        time.sleep(2.0)
        [stub] = backend_stub_pids(server.process.pid)
        os.kill(stub, signal.SIGKILL)
        caller.join(timeout=60)
        assert isinstance(outcome.get("error"), ServerError) and "not healthy" in str(outcome["error"])

        deadline = time.monotonic() + 120
        while server.watchdog.reloads == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert server.watchdog.reloads == 1
        with SVDClient(server.grpc_url, protocol="grpc", token=TOKEN) as svd:
            assert svd.ready()
            assert decode_video(svd.generate(sample_png, **SMALL).video, "mp4").num_frames == 2
        assert backend_stub_pids(server.process.pid) != [stub]
