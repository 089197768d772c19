"""Faults on the real server: the Python-backend process killed in the middle of a request, called directly and
through the gateway (which runs the lost attempts again)."""
import base64
import os
import signal
import threading
import time

import pytest
import requests

from tests.support import TOKEN, cpu_config_copy, start_server
from tests.support.gateways import Gateway, replicate_client, settings_for
from tests.support.waiting import until
from svd_triton import ServerError, SVDClient
from svd_triton.launcher import TritonServer, backend_stub_pids
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


@pytest.mark.slow
def test_jobs_queued_or_running_when_the_whole_server_dies_succeed_once_it_is_back(sample_png, tmp_path):
    """tritonserver and its stub SIGKILLed (a pod lost) with eight predictions queued or running, and started again
    on the same ports a few seconds later: all eight succeed, so do one sent while it was down and one sent right
    after it was ready. The gateway waits for the model instead of failing jobs, and reconnects within seconds."""
    image = base64.b64encode(sample_png).decode()
    first = start_server(models=("svd_xt",)).start()
    second = None
    try:
        with Gateway(settings_for(first, tmp_path, retry_backoff=0.5, poll_seconds=0.2)) as gateway:
            client = replicate_client(gateway)
            before = [client.predictions.create(version="any", input={"image": image, **SMALL, "num_frames": 4,
                                                                      "num_inference_steps": 30})
                      for _ in range(8)]
            until(lambda: any(client.predictions.get(p.id).status == "processing" for p in before), "a job running")
            first.watchdog.halt.set()  # the pod is gone, its watchdog with it
            os.killpg(first.process.pid, signal.SIGKILL)
            first.process.wait()
            during = client.predictions.create(version="any", input={"image": image, **SMALL})
            time.sleep(3)  # the scenario: the pod comes back a few seconds later
            waiting = client.predictions.get(during.id)  # waits for the model, not failed, and says so
            assert waiting.status == "starting" and waiting.logs.endswith("waiting for the model: Triton is down, "
                                                                          "restarting or loading it\n")
            second = TritonServer(first.options, ready_timeout=240).start()
            after = client.predictions.create(version="any", input={"image": image, **SMALL})
            for prediction in [*before, during, after]:
                prediction.wait()
                assert prediction.status == "succeeded", (prediction.id, prediction.error, prediction.logs)
            assert any("attempt 2" in prediction.logs for prediction in before)  # those running when it died
    finally:
        first.stop(grace=5)
        if second is not None:
            second.stop()


POISON_SEED = 666
POISON_HOOK = f'''

# Test only: a request with SEED {POISON_SEED} kills this model's process, with whatever shares its batch.
_execute = TritonPythonModel.execute


def _poisoned(self, requests):
    for request in requests:
        seed = pb_utils.get_input_tensor_by_name(request, "SEED")
        if seed is not None and int(seed.as_numpy().reshape(-1)[0]) == {POISON_SEED}:
            os.kill(os.getpid(), signal.SIGKILL)
    return _execute(self, requests)


TritonPythonModel.execute = _poisoned
'''


@pytest.mark.slow
def test_a_request_that_kills_the_model_every_time_fails_and_its_batch_neighbours_succeed(sample_png, tmp_path):
    """A test-only model (this test's copy of the repository) whose process dies on one seed: that prediction
    fails after --max-attempts naming why; the three batched with it (queued behind a running one, so that
    Triton batches them together) lose an attempt with it and succeed on their retry, which runs alone."""
    repository = cpu_config_copy(tmp_path).parents[2]
    model = repository / "svd_xt" / "1" / "model.py"
    model.write_text("import os\nimport signal\n" + model.read_text() + POISON_HOOK)
    image = base64.b64encode(sample_png).decode()
    with start_server(models=("svd_xt",), model_repository=repository) as server, \
            Gateway(settings_for(server, tmp_path / "gateway", concurrency=5, retry_backoff=0.2,
                                 poll_seconds=0.2)) as gateway:
        client = replicate_client(gateway)
        blocker = client.predictions.create(version="any", input={"image": image, **SMALL, "num_inference_steps": 30})
        until(lambda: client.predictions.get(blocker.id).status == "processing", "the first job running")
        poison = client.predictions.create(version="any", input={"image": image, **SMALL, "seed": POISON_SEED})
        neighbours = [client.predictions.create(version="any", input={"image": image, **SMALL, "seed": seed})
                      for seed in (1, 2, 3)]
        poison.wait()
        assert poison.status == "failed"
        assert poison.error.startswith("the model process died while running this request 3 times")
        for prediction in [blocker, *neighbours]:
            prediction.wait()
            assert prediction.status == "succeeded", (prediction.error, prediction.logs)
        assert any("attempt 1 of 3 was lost" in prediction.logs for prediction in neighbours)  # batched with it


@pytest.mark.slow
def test_a_direct_client_asked_to_retry_gets_its_video_through_a_model_process_death(sample_png):
    """SVDClient(retries=N) sends a generation lost to the stub's death again, with backoff, while the launcher
    reloads the model; with a seed, the video is the one the request would have made. Without `retries` (the
    default) the error is the caller's, as the test above shows."""
    with start_server(models=("svd_xt",)) as server:
        outcome = {}

        def long_request():
            with SVDClient(server.grpc_url, protocol="grpc", token=TOKEN, timeout=120, retries=6) as svd:
                outcome["result"] = svd.generate(sample_png, seed=7, num_inference_steps=60)

        caller = threading.Thread(target=long_request)
        caller.start()
        time.sleep(2.0)  # the request is running (the same moment the test above kills it)
        [stub] = backend_stub_pids(server.process.pid)
        os.kill(stub, signal.SIGKILL)
        caller.join(timeout=180)
        assert "result" in outcome and server.watchdog.reloads == 1  # it lived through the reload
        with SVDClient(server.grpc_url, protocol="grpc", token=TOKEN, timeout=120) as svd:
            again = svd.generate(sample_png, seed=7, num_inference_steps=60)
        assert outcome["result"].video == again.video
