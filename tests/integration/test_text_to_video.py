"""Text-to-video on real servers: text_to_image → svd_xt chained by text_to_video (BLS), tiny models on CPU,
called with plain tritonclient over HTTP and gRPC, with the svd_triton client, the CLI and the streaming variant."""
import asyncio
import json
import queue
import time

import numpy as np
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http

from tests.support.kserve import auth_headers, client, is_invalid_argument, make_inputs, refused, scalar, text, video_bytes
from svd_triton import AsyncSVDClient, SVDClient
from svd_triton.cli import main
from tests.support.videos import decode_video

SMALL = {"WIDTH": scalar(64, np.int32), "HEIGHT": scalar(64, np.int32), "NUM_FRAMES": scalar(4, np.int32),
         "NUM_INFERENCE_STEPS": scalar(2, np.int32)}
PROMPT = "a red kite over a green hill"
SLUG = "stabilityai-stable-video-diffusion"
"""The Forge slug this gateway serves (tests/integration/test_forge.py)."""


def text_to_video(server, protocol, tensors, outputs=("VIDEO", "SEED_USED", "IMAGE"), model="text_to_video"):
    requested = [(grpc if protocol == "grpc" else http).InferRequestedOutput(name) for name in outputs]
    connection = client(server, protocol)
    try:
        return connection.infer(model, make_inputs(protocol, tensors), outputs=requested, headers=auth_headers(protocol))
    finally:
        connection.close()  # an open HTTP connection holds the server's shutdown for its 30 s exit timeout


def prompt_request(prompt=PROMPT, **extra):
    return {"PROMPT": text(prompt), **SMALL, **extra}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_prompt_alone_makes_the_requested_video(triton, protocol):
    response = text_to_video(triton, protocol, prompt_request(SEED=scalar(11, np.int64), FPS=scalar(6, np.int32),
                                                              NUM_FRAMES=scalar(5, np.int32), VIDEO_FORMAT=text("webm")),
                             outputs=("VIDEO", "VIDEO_FORMAT", "SEED_USED", "IMAGE"))
    assert response.as_numpy("VIDEO_FORMAT").reshape(-1)[0] == b"webm"
    video = decode_video(video_bytes(response), "webm")
    assert (video.num_frames, video.size) == (5, (64, 64)) and video.fps == pytest.approx(6, abs=0.5)
    assert int(response.as_numpy("SEED_USED")[0, 0]) == 11
    image = response.as_numpy("IMAGE")
    assert image.shape == (1, 64, 64, 3) and image.dtype == np.uint8 and image.std() > 0


def test_one_seed_reproduces_the_whole_video_across_protocols(triton):
    first = text_to_video(triton, "http", prompt_request(SEED=scalar(3, np.int64)))
    again = text_to_video(triton, "grpc", prompt_request(SEED=scalar(3, np.int64)))
    other_seed = text_to_video(triton, "http", prompt_request(SEED=scalar(4, np.int64)))
    other_prompt = text_to_video(triton, "http", prompt_request("a blue boat", SEED=scalar(3, np.int64)))
    assert video_bytes(first) == video_bytes(again)
    assert np.array_equal(first.as_numpy("IMAGE"), again.as_numpy("IMAGE"))
    assert video_bytes(other_seed) != video_bytes(first)
    assert not np.array_equal(other_seed.as_numpy("IMAGE"), first.as_numpy("IMAGE"))
    assert not np.array_equal(other_prompt.as_numpy("IMAGE"), first.as_numpy("IMAGE"))


def test_seed_used_reproduces_a_video_made_without_a_seed(triton):
    first = text_to_video(triton, "grpc", prompt_request())
    seed = int(first.as_numpy("SEED_USED")[0, 0])
    again = text_to_video(triton, "grpc", prompt_request(SEED=scalar(seed, np.int64)))
    assert video_bytes(again) == video_bytes(first)


def test_image_is_the_first_frame_svd_xt_animated(triton):
    """IMAGE sent back to svd_xt with the same seed and settings gives the very same video."""
    chained = text_to_video(triton, "http", prompt_request(SEED=scalar(21, np.int64)))
    direct = text_to_video(triton, "http", {**SMALL, "IMAGE": chained.as_numpy("IMAGE"), "SEED": scalar(21, np.int64)},
                           outputs=("VIDEO",), model="svd_xt")
    assert video_bytes(direct) == video_bytes(chained)


def test_text_to_image_alone(triton):
    tensors = {"PROMPT": text(PROMPT), "WIDTH": scalar(96, np.int32), "HEIGHT": scalar(64, np.int32),
               "NUM_INFERENCE_STEPS": scalar(2, np.int32), "SEED": scalar(5, np.int64)}
    first = text_to_video(triton, "grpc", tensors, outputs=("IMAGE", "SEED_USED"), model="text_to_image")
    again = text_to_video(triton, "http", tensors, outputs=("IMAGE", "SEED_USED"), model="text_to_image")
    assert first.as_numpy("IMAGE").shape == (1, 64, 96, 3)
    assert np.array_equal(first.as_numpy("IMAGE"), again.as_numpy("IMAGE"))
    assert int(first.as_numpy("SEED_USED")[0, 0]) == 5


HOSTILE = {
    "empty prompt": ({"PROMPT": text("")}, "PROMPT"),
    "whitespace prompt": ({"PROMPT": text(" \n\t ")}, "PROMPT"),
    "non-UTF-8 prompt": ({"PROMPT": text(b"\xff\xfe\xfa")}, "PROMPT"),
    "100 kB prompt": ({"PROMPT": text("x" * 100_000)}, "PROMPT"),
    "no prompt": ({"PROMPT": None}, "PROMPT"),
    "two prompts in one request": ({"PROMPT": np.array([[b"a", b"b"]], dtype=np.object_)}, "PROMPT"),
    "prompt as a number": ({"PROMPT": scalar(1, np.int32)}, "PROMPT"),
    "non-UTF-8 negative prompt": ({"NEGATIVE_PROMPT": text(b"\xc3\x28")}, "NEGATIVE_PROMPT"),
    "image steps 0": ({"IMAGE_NUM_INFERENCE_STEPS": scalar(0, np.int32)}, "IMAGE_NUM_INFERENCE_STEPS"),
    "image steps over the limit": ({"IMAGE_NUM_INFERENCE_STEPS": scalar(51, np.int32)}, "IMAGE_NUM_INFERENCE_STEPS"),
    "image guidance 99": ({"IMAGE_GUIDANCE_SCALE": scalar(99.0, np.float32)}, "IMAGE_GUIDANCE_SCALE"),
    "image guidance NaN": ({"IMAGE_GUIDANCE_SCALE": scalar(np.nan, np.float32)}, "IMAGE_GUIDANCE_SCALE"),
    "seed as a float": ({"SEED": scalar(1.5, np.float32)}, "SEED"),
    "negative seed": ({"SEED": scalar(-1, np.int64)}, "SEED"),
    "width not a multiple of 8": ({"WIDTH": scalar(100, np.int32)}, "WIDTH"),
    "too many pixels": ({"WIDTH": scalar(2048, np.int32), "HEIGHT": scalar(2048, np.int32)}, "WIDTH"),
    "too many frames": ({"NUM_FRAMES": scalar(1000, np.int32)}, "NUM_FRAMES"),
    "over the work budget": ({"WIDTH": scalar(256, np.int32), "HEIGHT": scalar(256, np.int32),
                              "NUM_FRAMES": scalar(16, np.int32), "NUM_INFERENCE_STEPS": scalar(100, np.int32)},
                             "NUM_FRAMES"),
    "svd steps 0": ({"NUM_INFERENCE_STEPS": scalar(0, np.int32)}, "NUM_INFERENCE_STEPS"),
    "unknown video format": ({"VIDEO_FORMAT": text("exe")}, "VIDEO_FORMAT"),
    "decode chunk over frames": ({"DECODE_CHUNK_SIZE": scalar(9, np.int32)}, "DECODE_CHUNK_SIZE"),
    "motion bucket 999": ({"MOTION_BUCKET_ID": scalar(999, np.int32)}, "MOTION_BUCKET_ID"),
}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_bad_input_is_invalid_arg_naming_the_input(triton, protocol, case):
    overrides, name = HOSTILE[case]
    tensors = {key: value for key, value in {**prompt_request(), **overrides}.items() if value is not None}
    error = refused(lambda: text_to_video(triton, protocol, tensors))
    assert is_invalid_argument(error), error
    assert name in error.message(), error.message()
    if case == "over the work budget":
        assert "max_work" in error.message()
    assert "Traceback" not in error.message() and "/work" not in error.message() and ".py" not in error.message()
    assert triton.is_ready()


class Stream:
    """A plain tritonclient gRPC stream to text_to_video that collects every response."""

    def __init__(self, server):
        self.server = server
        self.client = grpc.InferenceServerClient(server.grpc_url)
        self.replies = queue.Queue()
        self.client.start_stream(lambda result, error: self.replies.put((result, error)), headers=auth_headers("grpc"))

    def send(self, tensors):
        self.client.async_stream_infer("text_to_video", make_inputs("grpc", tensors), outputs=[
            grpc.InferRequestedOutput(name) for name in ("VIDEO", "VIDEO_FORMAT", "SEED_USED", "IMAGE", "PROGRESS")])

    def next(self, timeout=120):
        result, error = self.replies.get(timeout=timeout)
        assert error is None, error.message()
        final = result.get_response().parameters["triton_final_response"].bool_param
        progress = result.as_numpy("PROGRESS")
        return final, (json.loads(progress.reshape(-1)[0]) if progress is not None else None), result

    def cancel(self):
        self.client.stop_stream(cancel_requests=True)


def test_stream_sends_text_to_image_then_svd_progress_then_one_video(triton_stream):
    stream = Stream(triton_stream)
    stream.send(prompt_request(SEED=scalar(8, np.int64), NUM_INFERENCE_STEPS=scalar(3, np.int32)))
    updates = []
    while True:
        final, progress, result = stream.next()
        if final:
            break
        assert result.as_numpy("VIDEO") is None
        updates.append(progress)
    phases = [u["phase"] for u in updates]
    assert phases == ["text-to-image"] * 2 + ["preparing"] + ["denoising"] * 4 + ["decoding", "encoding"]
    assert [u["elapsed"] for u in updates[2:]] == sorted(u["elapsed"] for u in updates[2:])
    assert [u["step"] for u in updates[:2]] == [0, 1]
    assert [u["step"] for u in updates if u["phase"] == "denoising"] == [0, 1, 2, 3]
    assert decode_video(video_bytes(result), "mp4").num_frames == 4
    assert result.as_numpy("VIDEO_FORMAT").reshape(-1)[0] == b"mp4"
    assert result.as_numpy("IMAGE").shape == (1, 64, 64, 3)
    assert int(result.as_numpy("SEED_USED")[0, 0]) == 8
    with pytest.raises(queue.Empty):  # nothing after the final response
        stream.replies.get(timeout=0.5)
    stream.cancel()


def _executions(server, model) -> int:
    stats = grpc.InferenceServerClient(server.grpc_url).get_inference_statistics(
        model, headers=auth_headers("grpc"), as_json=True)
    return int(stats["model_stats"][0].get("execution_count", 0))


def _stopped(server, model, since: int) -> list[str]:
    """Log lines after the first `since` ones in which `model` reports a request it ended (cancelled)."""
    return [line for line in server.log_path.read_text().splitlines()[since:]
            if f"{model}: request" in line and "cancelled" in line]


def _log_length(server) -> int:
    return len(server.log_path.read_text().splitlines())


def _wait_for(condition, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(0.2)
    return condition()


def _next_request_is_served(server):
    again = Stream(server)
    again.send(prompt_request(SEED=scalar(1, np.int64)))
    while not (reply := again.next())[0]:
        pass
    assert decode_video(video_bytes(reply[2]), "mp4").num_frames == 4
    again.cancel()


def test_cancelling_during_text_to_image_stops_both_stages(triton_stream):
    """The longest first frame the CPU config allows (512×512, 50 steps: seconds even on a quiet machine; at
    256×256 it once finished within the 1 s the test waited) is stopped within seconds and svd_xt never runs."""
    svd_runs, log_start = _executions(triton_stream, "svd_xt"), _log_length(triton_stream)
    stream = Stream(triton_stream)
    stream.send(prompt_request(WIDTH=scalar(512, np.int32), HEIGHT=scalar(512, np.int32),
                               IMAGE_NUM_INFERENCE_STEPS=scalar(50, np.int32)))
    final, progress, _ = stream.next()
    assert (final, progress["phase"], progress["step"]) == (False, "text-to-image", 0)
    time.sleep(0.3)  # the chain sends its text_to_image request just after this progress response
    stream.cancel()
    stopped = _wait_for(lambda: _stopped(triton_stream, "text_to_image", log_start), 20)
    assert stopped, "text_to_image never reported the cancellation"
    time.sleep(1.0)
    assert _executions(triton_stream, "svd_xt") == svd_runs
    _next_request_is_served(triton_stream)


def test_cancelling_during_svd_stops_svd_xt(triton_stream):
    """Cancelled once svd_xt is denoising (256×256, 16 frames, 16 steps: the CPU config's whole max_work budget,
    tens of seconds here), svd_xt stops at its next step."""
    log_start = _log_length(triton_stream)
    stream = Stream(triton_stream)
    stream.send(prompt_request(WIDTH=scalar(256, np.int32), HEIGHT=scalar(256, np.int32),
                               NUM_FRAMES=scalar(16, np.int32), NUM_INFERENCE_STEPS=scalar(16, np.int32)))
    while (update := stream.next())[1]["phase"] != "denoising":
        assert not update[0]
    stream.cancel()
    stopped = _wait_for(lambda: _stopped(triton_stream, "svd_xt", log_start), 30)
    assert stopped and "cancelled by the client in denoising" in stopped[0], stopped
    _next_request_is_served(triton_stream)


def test_clients_and_cli_take_a_prompt(triton, tmp_path, capsys):
    from tests.support import TOKEN

    with SVDClient(triton.http_url, token=TOKEN) as sync_client:
        result = sync_client.generate(prompt=PROMPT, seed=5, width=64, height=64, num_frames=4, num_inference_steps=2)
    assert decode_video(result.video, "mp4").num_frames == 4 and result.seed == 5 and result.video_format == "mp4"
    assert result.image.shape == (64, 64, 3)

    async def generate_async():
        async with AsyncSVDClient(triton.grpc_url, protocol="grpc", token=TOKEN) as async_client:
            return await async_client.generate(prompt=PROMPT, seed=5, width=64, height=64, num_frames=4,
                                               num_inference_steps=2)

    assert asyncio.run(generate_async()).video == result.video

    output, first_frame = tmp_path / "kite.mp4", tmp_path / "kite.png"
    assert main(["generate", "--prompt", PROMPT, "-o", str(output), "--url", triton.http_url, "--token", TOKEN,
                 "--seed", "5", "--width", "64", "--height", "64", "--num-frames", "4", "--num-inference-steps", "2",
                 "--first-frame", str(first_frame)]) == 0
    assert output.read_bytes() == result.video
    assert first_frame.read_bytes().startswith(b"\x89PNG")
    assert "4 frames, 64×64" in capsys.readouterr().out


@pytest.fixture(scope="module")
def gateway_triton():
    return "triton"


def test_voltagegpu_sample_body_makes_a_video_from_its_prompt(gateway):
    """VoltageGPU's sample request as written, sizes scaled down for the CPU demo stack (1024×576×25 → 128×72×5)."""
    import requests

    from tests.support import TOKEN

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    body = {
        "model": "stabilityai/stable-video-diffusion-img2vid-xt-1-1",
        "prompt": "A cat sitting on a windowsill watching rain fall outside, gentle motion",
        "num_frames": 5,
        "fps": 8,
        "width": 128,
        "height": 72,
    }
    reply = requests.post(f"{gateway.url}/v1/video/generations", headers=headers, json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    video_url = reply.json()["data"][0]["url"]
    assert reply.json()["warnings"] == []
    video = requests.get(video_url, timeout=30)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    decoded = decode_video(video.content, "mp4")
    assert (decoded.num_frames, decoded.size, decoded.fps) == (5, (128, 72), 8.0)


def test_forge_body_with_a_prompt_and_no_image(gateway):
    import base64

    import requests

    from tests.support import TOKEN

    body = {"prompt": PROMPT, "negative_prompt": "blurry", "seed": 3, "fps": 7, "width": 64, "height": 64,
            "num_frames": 4, "num_inference_steps": 2, "model": SLUG}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    reply = requests.post(f"{gateway.url}/v1/inference/{SLUG}", json=body, headers=headers,
                          timeout=300)
    assert reply.status_code == 200, reply.text
    assert reply.json()["seed"] == 3 and reply.json()["warnings"] == []
    assert decode_video(base64.b64decode(reply.json()["video"]), "mp4").num_frames == 4
    neither = requests.post(f"{gateway.url}/v1/inference/{SLUG}", json={"fps": 7}, headers=headers, timeout=30)
    assert neither.status_code == 400 and "image" in neither.text
    empty = requests.post(f"{gateway.url}/v1/inference/{SLUG}", json={"prompt": "  "}, headers=headers, timeout=60)
    assert empty.status_code == 400 and "PROMPT" in empty.text


def test_a_prediction_with_a_prompt_alone_runs_text_to_video(gateway, sample_png):
    """The jobs API through the official replicate client: a prompt and no image makes a video; with an image the
    prompt is ignored and the logs say so; a blank prompt fails naming it."""
    import base64

    import replicate
    import requests

    from tests.support import TOKEN

    client = replicate.Client(api_token=TOKEN, base_url=gateway.url)
    client.poll_interval = 0.1
    small = {"seed": 4, "width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2, "fps": 6}
    prediction = client.predictions.create(version="any", input={"prompt": PROMPT, **small})
    prediction.wait()
    assert prediction.status == "succeeded", prediction.error
    decoded = decode_video(requests.get(prediction.output, timeout=30).content, "mp4")
    assert (decoded.num_frames, decoded.size, decoded.fps) == (4, (64, 64), 6.0)
    with SVDClient(gateway.settings.triton_url, protocol="grpc", token=TOKEN) as direct:
        assert requests.get(prediction.output, timeout=30).content == direct.generate(prompt=PROMPT, **small).video
    with_image = client.predictions.create(version="any", input={
        "image": base64.b64encode(sample_png).decode(), "prompt": PROMPT, **small})
    with_image.wait()
    assert with_image.status == "succeeded" and "input.prompt: an image-to-video model takes no prompt" in with_image.logs
    blank = client.predictions.create(version="any", input={"prompt": " ", **small})
    blank.wait()
    assert blank.status == "failed" and "PROMPT" in blank.error


def test_idle_text_to_image_gives_its_weights_back_and_the_next_request_brings_them_back():
    """keep_warm_seconds for text_to_image ($TEXT_IMAGE_KEEP_WARM_SECONDS=1 here): released when idle, reloaded
    by the next request, each transition in its metrics."""
    from tests.support import TOKEN, on_free_ports
    from tests.support.prometheus import metrics
    from svd_triton.launcher import TritonServer

    def state(server):
        values = metrics(server, "text_to_image")
        [name] = [dict(labels)["state"] for (metric, labels), value in values.items()
                  if metric == "svd_model_state" and value == 1]
        return name, values[("svd_weight_bytes_on_device", frozenset())], values[("svd_cold_starts_total", frozenset())]

    tensors = {"PROMPT": text(PROMPT), "WIDTH": scalar(64, np.int32), "HEIGHT": scalar(64, np.int32),
               "SEED": scalar(5, np.int64)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEXT_IMAGE_KEEP_WARM_SECONDS", "1")
        server = TritonServer(on_free_ports(token=TOKEN, models=("text_to_image",)), ready_timeout=240).start()
    try:
        first = text_to_video(server, "http", tensors, outputs=("IMAGE",), model="text_to_image")
        assert _wait_for(lambda: state(server)[0] == "cold", 15), state(server)
        _, weight_bytes, cold_starts_before = state(server)
        assert weight_bytes == 0
        again = text_to_video(server, "grpc", tensors, outputs=("IMAGE",), model="text_to_image")
        assert np.array_equal(first.as_numpy("IMAGE"), again.as_numpy("IMAGE"))
        assert state(server)[2] == cold_starts_before + 1  # the request brought the weights back
    finally:
        server.stop()


def test_serve_loads_the_three_models_unless_svd_only(capsys):
    assert main(["serve", "--dry-run"]) == 0
    assert "--load-model=*" in capsys.readouterr().out
    assert main(["serve", "--dry-run", "--svd-only"]) == 0
    command = capsys.readouterr().out
    assert "--load-model=svd_xt" in command and "--load-model=*" not in command
