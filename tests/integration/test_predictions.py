"""Replicate's predictions API on a real gateway + real Triton (streaming variant), driven by the
official `replicate` client: run() with a local file and cog-svd input names, create + wait, progress
logs, cancellation that stops the server's work, listing, and input errors."""
from __future__ import annotations

import base64
import subprocess
import sys

import httpx
import pytest
from replicate.exceptions import ModelError, ReplicateError

from tests.support import TOKEN
from tests.support.gateways import replicate_client
from tests.support.waiting import until
from tests.support.videos import decode_video

REF = "stability-ai/stable-video-diffusion:3f0457e4619daac51203dedb472816fd4af51f3149fa7a9e0b5ffcf1b8172438"
SMALL = {"width": 64, "height": 64, "num_inference_steps": 2}


@pytest.fixture
def client(gateway):
    return replicate_client(gateway)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def fetch(url: str) -> bytes:
    reply = httpx.get(url, timeout=30)
    reply.raise_for_status()
    return reply.content


def server_cancellations(server) -> list[str]:
    return [line for line in server.log_path.read_text().splitlines() if "cancelled by the client" in line]


def test_run_with_a_local_file_and_cog_svd_names_returns_the_video_asked_for(client, tmp_path, sample_png):
    image = tmp_path / "photo.png"
    image.write_bytes(sample_png)
    output = client.run(REF, input={"input_image": image, "video_length": "14_frames_with_svd", "frames_per_second": 8,
                                    "sizing_strategy": "maintain_aspect_ratio", "motion_bucket_id": 100,
                                    "cond_aug": 0.05, "decoding_t": 7, "seed": 3, **SMALL})
    assert str(output).endswith(".mp4")
    video = decode_video(fetch(str(output)), "mp4")
    assert (video.num_frames, video.size) == (14, (64, 64)) and video.fps == pytest.approx(8, abs=0.5)
    [prediction] = [p for p in client.predictions.list() if p.output == str(output)]
    assert prediction.status == "succeeded" and prediction.model == "stability-ai/stable-video-diffusion"
    assert prediction.input["input_image"].startswith(client._base_url + "/v1/files/")  # uploaded by the client
    assert prediction.metrics["predict_time"] > 0


def test_segments_interpolation_and_loop_through_the_jobs_api(client, sample_png):
    output = client.run(REF, input={"input_image": data_uri(sample_png), "num_frames": 4, "segments": 2,
                                    "interpolate": 2, "loop": "pingpong", "fps": 6, "seed": 9, **SMALL})
    video = decode_video(fetch(str(output)), "mp4")
    # 4 + 3 joined frames, interpolated ×2 to 13, pingpong to 2×13−2
    assert video.num_frames == 24 and video.fps == pytest.approx(12, abs=0.5)


def test_a_model_error_fails_the_prediction_and_run_raises(client, sample_png):
    with pytest.raises(ModelError) as raised:  # this deployment allows 16 frames at most
        client.run("stability-ai/stable-video-diffusion", input={"input_image": data_uri(sample_png),
                                                                 "video_length": "25_frames_with_svd_xt", **SMALL})
    assert raised.value.prediction.status == "failed" and "NUM_FRAMES" in raised.value.prediction.error


def test_create_then_wait_reports_progress_in_logs(client, sample_png):
    prediction = client.predictions.create(version="any", input={"image": data_uri(sample_png), "num_frames": 4,
                                                                 "num_inference_steps": 3, "width": 64, "height": 64})
    assert prediction.status in ("starting", "processing") and prediction.urls["get"].endswith(prediction.id)
    prediction.wait()
    assert prediction.status == "succeeded", prediction.error
    assert "denoising" in prediction.logs and "encoding" in prediction.logs
    assert [line for line in prediction.logs.splitlines() if "denoising" in line][-1].startswith("100%|")
    assert prediction.progress is not None and prediction.progress.percentage == 1.0
    assert prediction.input["image"].startswith("sha256:")  # an inline image is not echoed back
    assert decode_video(fetch(prediction.output), "mp4").num_frames == 4


def test_prefer_wait_answers_with_the_finished_prediction(gateway, sample_png):
    reply = httpx.post(f"{gateway.url}/v1/predictions", headers={"Authorization": f"Bearer {TOKEN}", "Prefer": "wait=30"},
                       json={"input": {"input_image": data_uri(sample_png), "num_frames": 4, **SMALL}}, timeout=40)
    assert reply.status_code == 201 and reply.json()["status"] == "succeeded" and reply.json()["output"]


def test_cancel_stops_the_server_within_a_step(client, triton_stream, sample_png):
    before = len(server_cancellations(triton_stream))
    prediction = client.predictions.create(version="any", input={"image": data_uri(sample_png), "num_frames": 4,
                                                                 "width": 64, "height": 64, "num_inference_steps": 100})
    def denoising():
        prediction.reload()
        return "denoising" in (prediction.logs or "")

    until(denoising, "the prediction denoising", seconds=60)
    assert prediction.status == "processing"
    prediction.cancel()
    prediction.reload()
    assert prediction.status == "canceled" and prediction.output is None
    until(lambda: len(server_cancellations(triton_stream)) > before, "the server logging the cancellation", seconds=60)
    [line] = server_cancellations(triton_stream)[before:]
    stopped_at = int(line.split("after step ")[1].split(" of")[0])
    assert stopped_at < 50, line


def test_list_pages_newest_first(client, gateway, sample_png):
    created = [client.predictions.create(version="any", input={"image": data_uri(sample_png), "num_frames": 2, **SMALL})
               for _ in range(3)]
    first = httpx.get(f"{gateway.url}/v1/predictions?page_size=2", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    second = httpx.get(first["next"], headers={"Authorization": f"Bearer {TOKEN}"}).json()
    ids = [p["id"] for p in first["results"] + second["results"]]
    assert ids[:3] == [p.id for p in reversed(created)] and len(ids) == len(set(ids))
    for prediction in created:
        prediction.wait()
        assert prediction.status == "succeeded"


@pytest.mark.parametrize("given,field", [
    ({"frobnicate": 1}, "input.frobnicate"),
    ({"fps": 8, "frames_per_second": 8}, "input.frames_per_second"),
    ({"frames_per_second": 60}, "input.frames_per_second"),  # cog-svd's range is 5–30
    ({"video_length": "100_frames"}, "input.video_length"),
    ({"input_image": "https://example.com/cat.png"}, "input.input_image"),
    ({"input_image": "!!not base64!!"}, "input.input_image"),
])
def test_bad_inputs_are_422_naming_the_field(client, sample_png, given, field):
    with pytest.raises(ReplicateError) as raised:
        client.predictions.create(version="any", input={"input_image": data_uri(sample_png), **given})
    assert raised.value.status == 422 and field in raised.value.detail


def test_unknown_prediction_is_404(client):
    with pytest.raises(ReplicateError) as raised:
        client.predictions.get("nope")
    assert raised.value.status == 404


def test_jobs_cli_submits_waits_cancels_and_lists(gateway, triton_stream, tmp_path, sample_png):
    image = tmp_path / "photo.png"
    image.write_bytes(sample_png)
    jobs = [sys.executable, "-m", "svd_triton", "jobs"]
    connection = ["--gateway", gateway.url, "--token", TOKEN]

    def cli(*args, check=True):
        done = subprocess.run([*jobs, *args, *connection], capture_output=True, text=True, timeout=120)
        assert not check or done.returncode == 0, done.stderr
        return done

    done = cli("submit", str(image), "--num-frames", "4", "--num-inference-steps", "3", "--width", "64", "--height", "64",
               "--wait", "-o", str(tmp_path / "clip.webm"))
    assert "denoising" in done.stderr and "succeeded" in done.stdout
    assert decode_video((tmp_path / "clip.webm").read_bytes(), "webm").num_frames == 4

    # The longest job the server allows at this size (4 segments of 100 steps): tens of seconds, against the
    # second or two each CLI call takes, so it is still computing when `cancel` arrives however busy the machine.
    slow = cli("submit", str(image), "--num-frames", "4", "--num-inference-steps", "100", "--segments", "4",
               "--width", "64", "--height", "64").stdout.strip()
    until(lambda: "processing" in cli("status", slow).stdout, "the slow job processing", seconds=60, interval=0.2)
    assert "canceled" in cli("cancel", slow).stdout
    waited = cli("wait", slow, check=False)
    assert waited.returncode == 1 and "canceled" in waited.stdout
    assert slow in cli("list", "--limit", "5").stdout
    missing = cli("status", "nope", check=False)
    assert missing.returncode == 1 and "HTTP 404: no such prediction" in missing.stderr


def test_replicate_enable_deepcache_reaches_the_model(client, sample_png):
    """Replicate's optimised SVD inputs: enable_deepcache (interval 3 unless cache_interval says) and
    cache_branch_id give the engine's cached frames; enable_deepcache=false is the uncached video."""
    def frames(**fields) -> bytes:
        return fetch(str(client.run(REF, input={"input_image": data_uri(sample_png), "num_frames": 4, "seed": 5,
                                                "video_format": "frames", **SMALL, "num_inference_steps": 3, **fields})))

    enabled = frames(enable_deepcache=True)
    assert enabled == frames(cache_interval=3)
    assert frames(enable_deepcache=True, cache_interval=2, cache_branch_id=1) == frames(cache_interval=2, cache_branch_id=1)
    assert enabled != frames(enable_deepcache=False) == frames()
