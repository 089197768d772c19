"""The svd_triton client library and CLI against the real server."""
import asyncio
import subprocess
import sys

import pytest
from PIL import Image

from svd_contract import Deployment
from tests.support import TOKEN
from svd_triton import AsyncSVDClient, InvalidRequestError, SVDClient, UnauthorizedError, UnavailableError
from svd_triton.launcher import free_port
from tests.support.videos import decode_video

SMALL = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2}


def url(triton, protocol):
    return triton.http_url if protocol == "http" else triton.grpc_url


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_generate_from_path_bytes_pil_and_array(triton, protocol, tmp_path, sample_png, sample_rgb):
    path = tmp_path / "input.png"
    path.write_bytes(sample_png)
    with SVDClient(url(triton, protocol), protocol=protocol, token=TOKEN) as svd:
        assert svd.ready()
        results = [svd.generate(image, seed=9, **SMALL) for image in (path, sample_png, Image.fromarray(sample_rgb), sample_rgb)]
    assert len({r.video for r in results[:2]}) == 1  # path and bytes send the same file
    for result in results:
        assert result.seed == 9 and result.video_format == "mp4" and result.seconds > 0
        assert decode_video(result.video, "mp4").num_frames == 4


def test_result_save_frames_and_formats(triton, tmp_path, sample_png):
    with SVDClient(triton.http_url, token=TOKEN) as svd:
        result = svd.generate(sample_png, frames=True, video_format="webm", **SMALL)
    assert result.video_format == "webm"
    assert result.frames.shape == (4, 64, 64, 3)
    saved = result.save(tmp_path / "clip.webm")
    assert decode_video(saved.read_bytes(), "webm").num_frames == 4


def test_async_client(triton, sample_png):
    async def run():
        async with AsyncSVDClient(triton.grpc_url, protocol="grpc", token=TOKEN) as svd:
            assert await svd.ready()
            return await asyncio.gather(*(svd.generate(sample_png, seed=s, **SMALL) for s in (1, 2)))

    results = asyncio.run(run())
    assert [r.seed for r in results] == [1, 2]
    assert results[0].video != results[1].video


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_errors_are_typed_with_the_server_message(triton, protocol, sample_png):
    with SVDClient(url(triton, protocol), protocol=protocol, token=TOKEN) as svd:
        with pytest.raises(InvalidRequestError, match="NUM_INFERENCE_STEPS"):
            svd.generate(sample_png, **{**SMALL, "num_inference_steps": 0})
        with pytest.raises(InvalidRequestError, match="unknown parameter 'guidance'"):
            svd.generate(sample_png, guidance=2.0)
    with SVDClient(url(triton, protocol), protocol=protocol, token="wrong") as svd:
        with pytest.raises(UnauthorizedError, match="restricted"):
            svd.generate(sample_png, **SMALL)
    with SVDClient(f"localhost:{free_port()}", protocol=protocol, timeout=5) as svd:
        assert not svd.ready()
        with pytest.raises(UnavailableError):
            svd.generate(sample_png, **SMALL)


@pytest.mark.parametrize("protocol,video_format", [("http", "gif"), ("grpc", "frames")])
def test_the_video_format_is_what_the_model_says(triton, protocol, video_format, sample_png):
    with SVDClient(url(triton, protocol), protocol=protocol, token=TOKEN) as svd:
        result = svd.generate(sample_png, video_format=video_format, **SMALL)
    assert result.video_format == video_format
    assert decode_video(result.video, video_format).num_frames == 4


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_preset_through_triton_is_its_fields_and_a_hostile_one_names_the_field(triton, protocol, sample_png):
    """`fast` at 3 steps (given: it wins) is ays with all 3 steps conditional-only (its window capped at the
    steps): the same video as those fields given by hand, another than `quality`'s."""
    shape = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 3, "seed": 9}
    with SVDClient(url(triton, protocol), protocol=protocol, token=TOKEN) as svd:
        fast = svd.generate(sample_png, preset="fast", **shape)
        by_hand = svd.generate(sample_png, schedule="ays", conditional_final_steps=3, **shape)
        quality = svd.generate(sample_png, preset="quality", **shape)
        assert fast.video == by_hand.video != quality.video
        with pytest.raises(InvalidRequestError, match="PRESET") as refused:
            svd.generate(sample_png, preset="turbo", **shape)
        assert "quality" in str(refused.value) and "fast" in str(refused.value)


def test_deployment_is_read_from_the_model_configuration(triton):
    with SVDClient(triton.http_url, token=TOKEN) as svd:
        over_http = svd.deployment()

    async def read():
        async with AsyncSVDClient(triton.grpc_url, protocol="grpc", token=TOKEN) as svd:
            return await svd.deployment()

    assert isinstance(over_http, Deployment) and asyncio.run(read()) == over_http
    # configs/cpu.pbtxt's values, where they differ from the defaults
    assert (over_http.default_width, over_http.default_num_frames, over_http.max_num_frames, over_http.max_work) == (
        128, 8, 16, 16777216)


def test_cli_generate_writes_a_playable_file(triton, tmp_path, sample_png):
    image = tmp_path / "input.png"
    image.write_bytes(sample_png)
    output = tmp_path / "out.gif"
    done = subprocess.run(
        [sys.executable, "-m", "svd_triton", "generate", str(image), "-o", str(output), "--url", triton.grpc_url,
         "--grpc", "--token", TOKEN, "--num-frames", "6", "--width", "96", "--height", "64",
         "--num-inference-steps", "2", "--seed", "5", "--fps", "10", "--preset", "fast"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{output}: 6 frames, 96×64, gif" in done.stdout and "seed 5" in done.stdout
    video = decode_video(output.read_bytes(), "gif")
    assert (video.num_frames, video.size) == (6, (96, 64))
    assert video.fps == pytest.approx(10, abs=0.5)


def test_cli_reports_invalid_input_without_a_traceback(triton, tmp_path):
    image = tmp_path / "broken.png"
    image.write_bytes(b"not a png")
    done = subprocess.run([sys.executable, "-m", "svd_triton", "generate", str(image), "-o", str(tmp_path / "x.mp4"),
                           "--url", triton.http_url, "--token", TOKEN], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "InvalidRequestError" in done.stderr and "IMAGE_BYTES" in done.stderr
    assert "Traceback" not in done.stderr
