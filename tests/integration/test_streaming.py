"""Progress streaming, cancellation of abandoned requests, and the bounded queue, on real servers."""
import asyncio
import concurrent.futures
import json
import queue
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tritonclient.grpc as grpc

from tests.support import TOKEN
from tests.support.prometheus import metrics
from tests.support.kserve import auth_headers, image_bytes, infer, make_inputs, scalar, small
from svd_triton import AsyncSVDClient, SVDClient, SVDClientError, UnavailableError
from svd_triton.cli import ProgressBar
from svd_triton.client import ProgressUpdate
from tests.support.videos import decode_video, max_abs_diff
from tests.support.waiting import until

RUNNING = ("svd_requests_running", frozenset())
LONG = {"NUM_INFERENCE_STEPS": scalar(100, np.int32), "WIDTH": scalar(128, np.int32), "HEIGHT": scalar(128, np.int32)}


class Stream:
    """A plain tritonclient gRPC stream that collects every response."""

    def __init__(self, server):
        self.client = grpc.InferenceServerClient(server.grpc_url)
        self.replies = queue.Queue()
        self.client.start_stream(lambda result, error: self.replies.put((result, error)),
                                 headers=auth_headers("grpc"))

    def send(self, tensors, outputs=("VIDEO", "SEED_USED", "PROGRESS")):
        self.client.async_stream_infer("svd_xt", make_inputs("grpc", tensors),
                                       outputs=[grpc.InferRequestedOutput(n) for n in outputs])

    def next(self, timeout=60):
        result, error = self.replies.get(timeout=timeout)
        assert error is None, error
        final = result.get_response().parameters["triton_final_response"].bool_param
        progress = result.as_numpy("PROGRESS")
        return final, (json.loads(progress.reshape(-1)[0]) if progress is not None else None), result

    def wait_for_step(self, step):
        while True:
            final, progress, _ = self.next()
            assert not final
            if progress["phase"] == "denoising" and progress["step"] >= step:
                return

    def cancel(self):
        self.client.stop_stream(cancel_requests=True)


def _executions(server) -> int:
    stats = grpc.InferenceServerClient(server.grpc_url).get_inference_statistics("svd_xt", headers=auth_headers("grpc"),
                                                                               as_json=True)
    return int(stats["model_stats"][0].get("execution_count", 0))


def _cancellations(server) -> list[str]:
    return [line for line in server.log_path.read_text().splitlines() if "cancelled by the client" in line]


def test_progress_arrives_in_order_and_ends_with_one_final_video(triton_stream, sample_png):
    stream = Stream(triton_stream)
    stream.send(small(IMAGE_BYTES=image_bytes(sample_png), NUM_INFERENCE_STEPS=scalar(5, np.int32)))
    updates = []
    while True:
        final, progress, result = stream.next()
        if final:
            break
        updates.append(progress)
        assert result.as_numpy("VIDEO") is None
    assert [u["phase"] for u in updates] == ["preparing"] + ["denoising"] * 6 + ["decoding", "encoding"]
    assert [u["step"] for u in updates if u["phase"] == "denoising"] == [0, 1, 2, 3, 4, 5]
    assert all(u["total"] == 5 for u in updates)
    assert [u["elapsed"] for u in updates] == sorted(u["elapsed"] for u in updates)
    assert decode_video(bytes(result.as_numpy("VIDEO").reshape(-1)[0]), "mp4").num_frames == 4
    assert int(result.as_numpy("SEED_USED")[0, 0]) >= 0
    with pytest.raises(queue.Empty):  # nothing after the final response
        stream.replies.get(timeout=0.5)
    stream.cancel()


def test_progress_reports_each_segment(triton_stream, sample_png):
    stream = Stream(triton_stream)
    stream.send(small(IMAGE_BYTES=image_bytes(sample_png), SEGMENTS=scalar(2, np.int32)))
    updates = []
    while not (reply := stream.next())[0]:
        updates.append(reply[1])
    assert [(u["segment"], u["phase"]) for u in updates if u["phase"] != "denoising"] == [
        (1, "preparing"), (1, "decoding"), (2, "preparing"), (2, "decoding"), (2, "encoding")]
    assert all(u["segments"] == 2 for u in updates)
    assert decode_video(bytes(reply[2].as_numpy("VIDEO").reshape(-1)[0]), "mp4").num_frames == 4 + 3
    stream.cancel()


def test_cancelling_a_stream_stops_the_work_and_the_next_request_is_prompt(triton_stream, sample_png):
    before = len(_cancellations(triton_stream))
    stream = Stream(triton_stream)
    stream.send({"IMAGE_BYTES": image_bytes(sample_png), **LONG})
    stream.wait_for_step(2)
    stream.cancel()
    until(lambda: len(_cancellations(triton_stream)) > before, "the model logging the cancellation", seconds=10)
    [line] = _cancellations(triton_stream)[before:]
    stopped_at = int(line.split("after step ")[1].split(" of")[0])
    assert stopped_at <= 4, line  # stopped within a step or two of 100
    with SVDClient(triton_stream.grpc_url, protocol="grpc", token=TOKEN) as svd:
        assert decode_video(svd.generate(sample_png, width=64, height=64, num_frames=4, num_inference_steps=2).video,
                            "mp4").num_frames == 4
    # Prompt by construction: the cancelled request stopped at the step above, so it ran no further steps.
    assert len(_cancellations(triton_stream)) == before + 1


def test_one_cancelled_request_in_a_batch_leaves_the_others_correct(triton_stream, sample_png):
    tensors = small(IMAGE_BYTES=image_bytes(sample_png), SEED=scalar(31, np.int64), NUM_INFERENCE_STEPS=scalar(12, np.int32))
    outputs = ("VIDEO", "FRAMES", "PROGRESS")
    blocker, keeper, quitter = Stream(triton_stream), Stream(triton_stream), Stream(triton_stream)
    executions = _executions(triton_stream)
    blocker.send(tensors, outputs)
    blocker.wait_for_step(1)  # the model is busy: the next two wait in the queue and leave it as one batch
    keeper.send(tensors, outputs)
    quitter.send(tensors, outputs)
    quitter.wait_for_step(1)
    quitter.cancel()
    while not (reply := keeper.next())[0]:
        pass
    result = reply[2]
    # A decoupled model sends its final response before execute() returns, and Triton counts the
    # execution only then: give the statistics a moment, then expect exactly two executions.
    until(lambda: _executions(triton_stream) >= executions + 2, "Triton counting both executions", seconds=10)
    time.sleep(0.5)
    assert _executions(triton_stream) == executions + 2  # the blocker's, then one shared by keeper and quitter
    reference = Stream(triton_stream)
    reference.send(tensors, outputs)
    while not (reply := reference.next())[0]:
        pass
    frames = result.as_numpy("FRAMES")[0]
    assert max_abs_diff(frames, reply[2].as_numpy("FRAMES")[0]) <= 1
    assert decode_video(bytes(result.as_numpy("VIDEO").reshape(-1)[0]), "mp4").num_frames == 4
    for stream in (blocker, keeper, reference):
        stream.cancel()


def test_client_stream_reports_progress_and_http_is_refused(triton_stream, sample_png):
    updates = []
    with SVDClient(triton_stream.grpc_url, protocol="grpc", token=TOKEN) as svd:
        assert svd.streams
        result = svd.generate(sample_png, seed=4, width=64, height=64, num_frames=4, num_inference_steps=3,
                              on_progress=updates.append)
    assert result.seed == 4 and decode_video(result.video, "mp4").num_frames == 4
    assert [u.step for u in updates if u.phase == "denoising"] == [0, 1, 2, 3]
    with SVDClient(triton_stream.http_url, token=TOKEN) as svd, pytest.raises(SVDClientError, match="protocol='grpc'"):
        svd.generate(sample_png)


def test_async_client_streams_and_task_cancellation_reaches_the_server(triton_stream, sample_png):
    async def run():
        async with AsyncSVDClient(triton_stream.grpc_url, protocol="grpc", token=TOKEN) as svd:
            updates = []
            result = await svd.generate(sample_png, width=64, height=64, num_frames=4, num_inference_steps=2,
                                        on_progress=updates.append)
            task = asyncio.create_task(svd.generate(sample_png, num_inference_steps=100))
            await asyncio.sleep(1.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return result, updates

    before = len(_cancellations(triton_stream))
    result, updates = asyncio.run(run())
    assert decode_video(result.video, "mp4").num_frames == 4 and updates[-1].phase == "encoding"
    until(lambda: len(_cancellations(triton_stream)) > before, "the model logging the cancellation", seconds=10)
    assert len(_cancellations(triton_stream)) == before + 1


def test_unary_grpc_cancel_and_client_timeout_stop_the_server_work(triton, sample_png):
    """Both requests are still computing when they end (100 steps), so the model itself sees each end and logs
    it; the cancel waits until the model computes the first (svd_requests_running), not for a fixed time."""
    before = len(_cancellations(triton))
    client = grpc.InferenceServerClient(triton.grpc_url)
    replies = queue.Queue()
    call = client.async_infer("svd_xt", make_inputs("grpc", {"IMAGE_BYTES": image_bytes(sample_png), **LONG}),
                              callback=lambda result, error: replies.put(error), headers=auth_headers("grpc"))
    until(lambda: metrics(triton)[RUNNING] == 1, "the model computing the request")
    call.cancel()
    assert "CANCELLED" in str(replies.get(timeout=60).status())
    until(lambda: len(_cancellations(triton)) == before + 1, "the model stopping the cancelled request")
    with SVDClient(triton.grpc_url, protocol="grpc", token=TOKEN, timeout=3.0) as svd:
        with pytest.raises(UnavailableError):  # DEADLINE_EXCEEDED: the client gave up, the video never came
            svd.generate(sample_png, num_inference_steps=100)
    until(lambda: len(_cancellations(triton)) == before + 2, "the model stopping the request past its deadline")


def test_a_saturated_queue_answers_unavailable_at_once(triton, sample_png):
    tensors = {"IMAGE_BYTES": image_bytes(sample_png), "NUM_INFERENCE_STEPS": scalar(6, np.int32)}

    def one():
        try:
            return infer(triton, "grpc", tensors, outputs=("SEED_USED",))
        except Exception as error:
            return error

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(lambda _: one(), range(20)))
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert refused, "20 concurrent requests should overflow a queue of 8 behind a batch of 4"
    for error in refused:
        assert "UNAVAILABLE" in str(error.status()) and "Exceeds maximum queue size" in error.message()
    # Every request that found room got its video: at least the 8 the queue holds and one executing (how many
    # the first batch took depends on how many had arrived within its 100 ms batching delay).
    assert len(outcomes) - len(refused) >= 9
    with SVDClient(triton.grpc_url, protocol="grpc", token=TOKEN) as svd:
        assert svd.generate(sample_png, width=64, height=64, num_frames=4, num_inference_steps=2).video


def test_progress_bar_rendering():
    bar = ProgressBar(sys.stderr)
    line = bar.render(ProgressUpdate("denoising", 5, 20, 2.0))
    assert line.startswith("denoising    5/20") and "ETA 6.0 s" in line and "▕██████" in line
    later = bar.render(ProgressUpdate("denoising", 5, 20, 9.0, segment=2, segments=3))
    assert later.startswith("segment 2/3 denoising    5/20") and "ETA" not in later


def test_cli_stream_shows_progress_and_ctrl_c_cancels_server_work(triton_stream, tmp_path, sample_png):
    image = tmp_path / "in.png"
    image.write_bytes(sample_png)
    command = [sys.executable, "-m", "svd_triton", "generate", str(image), "--stream", "--url", triton_stream.grpc_url,
               "--token", TOKEN]
    quick = subprocess.run(command + ["-o", str(tmp_path / "quick.mp4"), "--num-frames", "4", "--num-inference-steps", "3",
                                      "--width", "64", "--height", "64"], capture_output=True, text=True, timeout=120)
    assert quick.returncode == 0, quick.stderr
    assert [line.split()[0] for line in quick.stderr.splitlines()] == ["preparing", "denoising", "decoding", "encoding"]
    assert "quick.mp4: 4 frames, 64×64" in quick.stdout

    before = len(_cancellations(triton_stream))
    # A terminal's Ctrl-C: SIGINT with its default disposition, even when this test runs as a background
    # job (whose shell makes it ignore SIGINT, an ignore that children inherit).
    slow = subprocess.Popen(command + ["-o", str(tmp_path / "slow.mp4"), "--num-inference-steps", "100"],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert slow.stderr.readline().startswith("preparing")
    assert slow.stderr.readline().startswith("denoising")
    slow.send_signal(signal.SIGINT)
    assert slow.wait(timeout=20) == 130
    assert "interrupted; the request was cancelled" in slow.stderr.read()
    until(lambda: len(_cancellations(triton_stream)) > before, "the model logging the cancellation", seconds=10)
    assert len(_cancellations(triton_stream)) == before + 1
    assert not (tmp_path / "slow.mp4").exists()


def test_a_burst_of_concurrent_streams_is_served_and_the_server_survives(triton_stream, sample_png):
    """32 streaming requests from 8 threads, batched by Triton: before replies were sent from the
    execute thread, tritonserver 2.51 aborted within seconds of this (lock_exception / SIGSEGV)."""
    def one(seed: int) -> tuple[int, bytes, int]:
        updates = []
        with SVDClient(triton_stream.grpc_url, protocol="grpc", token=TOKEN) as client:
            result = client.generate(sample_png, on_progress=updates.append, seed=seed, width=64, height=64,
                                     num_frames=4, num_inference_steps=2, video_format="mp4")
        return result.seed, result.video, len(updates)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(32)))
    assert [seed for seed, _, _ in results] == list(range(32))
    assert all(decode_video(video, "mp4").num_frames == 4 and progress > 0 for _, video, progress in results)
    assert len({video for _, video, _ in results}) == 32
    assert triton_stream.process.poll() is None
    assert not [line for line in triton_stream.log_path.read_text(errors="replace").splitlines() if "Signal (" in line]
