"""Faults on the real server: the Python-backend process killed in the middle of a request, called directly and
through the gateway (which runs the lost attempts again)."""
import base64
import os
import signal
import threading
import time

import pytest
import requests

from tests.support import TOKEN, start_server
from tests.support.gateways import Gateway, replicate_client, settings_for
from tests.support.waiting import until
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


@pytest.mark.slow
def test_predictions_running_when_the_model_process_dies_are_run_again_and_succeed(sample_png, tmp_path):
    """Through the gateway, four predictions running when the stub is SIGKILLed all succeed: the lost attempt is
    queued again, waits while the model is reloaded, and runs from the start; the logs say which attempt ran."""
    image = base64.b64encode(sample_png).decode()
    with start_server(models=("svd_xt",)) as server, \
            Gateway(settings_for(server, tmp_path, retry_backoff=0.2, poll_seconds=0.2)) as gateway:
        client = replicate_client(gateway)
        running = [client.predictions.create(version="any", input={"image": image, **SMALL, "num_frames": 4,
                                                                   "num_inference_steps": 40})
                   for _ in range(4)]
        until(lambda: all(client.predictions.get(p.id).status == "processing" for p in running), "all four running")
        [stub] = backend_stub_pids(server.process.pid)
        os.kill(stub, signal.SIGKILL)
        for prediction in running:
            prediction.wait()
            assert prediction.status == "succeeded", prediction.error
            assert "attempt 1 of 3 was lost (Stub process 'svd_xt_0_0' is not healthy.)" in prediction.logs
            assert decode_video(requests.get(prediction.output, timeout=30).content, "mp4").num_frames == 4
        after = client.predictions.create(version="any", input={"image": image, **SMALL})
        after.wait()
        assert after.status == "succeeded" and "was lost" not in after.logs
