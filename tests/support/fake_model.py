"""A model client for gateway tests without Triton: `create_app(settings, model=lambda _: fake)` runs the whole
gateway (families, data plane, job runner, store) in the test process against `FakeModel`, which answers as
svd_xt does (a real encoded video, progress steps, keep-warm state, the deployment's configuration) and lets
a test record, fail or hold each generation."""
from __future__ import annotations

import asyncio
import functools
import io
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from svd_contract import Deployment
from svd_contract.deployment import config_parameters
from svd_contract.tensors import SVD_MODEL, inputs
from svd_gateway import Settings, create_app
from svd_triton import ProgressUpdate, SVDClientError, VideoResult
from tests.support import TOKEN

FAKE_SEED = 4242
"""The seed a generation reports when its request named none."""
DEFAULTS = {"width": 64, "height": 64, "num_frames": 4, "fps": 6, "video_format": "mp4"}
"""What a generation that names none of these makes (and the fake deployment's defaults say so)."""
DEPLOYMENT = {
    "model_source": "tiny", "dtype": "float32", "default_num_inference_steps": "4", "default_decode_chunk_size": "8",
    "max_pixels": "262144", "max_num_frames": "16", "max_work": "16777216", "max_segments": "4",
    "max_output_frames": "256", "max_cache_interval": "10", "max_image_bytes": "20971520",
    "max_image_pixels": "40000000", "keep_warm_seconds": "300", "fast_path": "auto",
    **{f"default_{name}": str(value) for name, value in DEFAULTS.items()},
}
"""model_repository/svd_xt/configs/cpu.pbtxt's parameters (a copy: the tests' limits stay put when that config is
tuned), with DEFAULTS' video as the default."""
STARTUP_SECONDS = 0.25
"""How long the fake's cold start reports it took."""
COLOUR = (51, 102, 153)
ENCODERS = {
    "mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "webm": ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p"],
    "avi": ["-c:v", "mjpeg", "-pix_fmt", "yuvj420p"],
    "gif": [],
}
"""ffmpeg's arguments for svd_contract.VIDEO_FORMATS' video files (webp and frames are written without it)."""


@functools.cache
def solid_video(video_format: str, width: int, height: int, num_frames: int, fps: int) -> bytes:
    """A real file of `num_frames` solid frames, each a shade brighter (encoders merge equal frames), so that
    routes that decode, sniff or serve videos get one; the same bytes on every call (bitexact: no random ids or
    dates in the container), so that a test can compare what it was sent with it."""
    pictures = np.full((num_frames, height, width, 3), COLOUR, dtype=np.uint8)
    pictures[..., 0] += (np.arange(num_frames, dtype=np.uint8) * 8)[:, None, None]
    buffer = io.BytesIO()
    if video_format == "frames":
        np.save(buffer, pictures)
        return buffer.getvalue()
    if video_format == "webp":
        first, *rest = (Image.fromarray(picture) for picture in pictures)
        first.save(buffer, "WEBP", save_all=True, append_images=rest, duration=round(1000 / fps), loop=0)
        return buffer.getvalue()
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / f"video.{video_format}"
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
                        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:",
                        *ENCODERS[video_format], "-fflags", "+bitexact", "-flags:v", "+bitexact", str(target)],
                       input=pictures.tobytes(), check=True)
        return target.read_bytes()


@dataclass
class Call:
    """One generate call as the model received it."""

    image: bytes | None
    prompt: str | None
    params: dict[str, Any]
    cancelled: bool = False


@dataclass
class FakeModel:
    """svd_xt behind the `ModelClient` seam (svd_gateway/model_client.py). Set `failure` to make generations
    raise it (svd_triton.errors' client errors, as AsyncSVDClient raises them); `hold()` makes the next
    generations wait, after their first progress steps, until `release()` (from the test's thread: the gateway
    runs on TestClient's event loop), so that a test sees them running and may cancel them."""

    steps: int = 4
    failure: SVDClientError | None = None
    is_ready: bool = True
    calls: list[Call] = field(default_factory=list)
    fail_next: list[Exception] = field(default_factory=list)
    """Raised by the next generations, one each, before `failure` is looked at."""
    controls: list[str] = field(default_factory=list)
    """The keep-warm actions asked for, in order."""
    held: list[Call] = field(default_factory=list)
    """The generations waiting for release() now."""
    holding: bool = False
    _gates: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)
    _keep_warm: dict[str, Any] = field(default_factory=lambda: {
        "state": "cold", "since": time.time(), "pinned": False, "cold_starts": 0, "last_cold_start_seconds": None})

    def hold(self) -> None:
        """Make the generations from now on wait after their first denoising step."""
        self.holding = True

    def release(self) -> None:
        """Let every held generation (and the ones to come) finish."""
        self.holding = False
        for loop, gate in list(self._gates):
            loop.call_soon_threadsafe(gate.set)

    async def generate(self, image: Any = None, *, prompt: str | None = None, frames: bool = False,
                       on_progress: Callable[[ProgressUpdate], Any] | None = None, **params: Any) -> VideoResult:
        started = time.perf_counter()
        call = Call(image, prompt, params)
        self.calls.append(call)
        report = on_progress or (lambda update: None)
        if self.fail_next:
            raise self.fail_next.pop(0)
        if self.failure is not None:
            raise self.failure
        report(ProgressUpdate("preparing", 0, self.steps, time.perf_counter() - started))
        report(ProgressUpdate("denoising", 1, self.steps, time.perf_counter() - started))
        if self.holding:
            await self._wait_for_release(call)
        for step in range(2, self.steps + 1):
            report(ProgressUpdate("denoising", step, self.steps, time.perf_counter() - started))
        report(ProgressUpdate("encoding", self.steps, self.steps, time.perf_counter() - started))
        shape = {name: params.get(name, default) for name, default in DEFAULTS.items()}
        video = await asyncio.to_thread(solid_video, **shape)
        return VideoResult(video=video, seed=params.get("seed", FAKE_SEED), seconds=time.perf_counter() - started,
                           video_format=shape["video_format"], frames=None, image=None)

    async def _wait_for_release(self, call: Call) -> None:
        gate = (asyncio.get_running_loop(), asyncio.Event())
        self._gates.append(gate)
        self.held.append(call)
        try:
            await gate[1].wait()
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        finally:
            self._gates.remove(gate)
            self.held.remove(call)

    async def control(self, action: str) -> dict[str, Any]:
        """The keep-warm state as svd_xt's CONTROL answers it (model.py: KeepWarm.state() and the action's)."""
        self.controls.append(action)
        state = self._keep_warm
        was_cold = action in ("prewarm", "pin") and state["state"] == "cold"
        if was_cold:
            state.update(state="warm", since=time.time(), cold_starts=state["cold_starts"] + 1,
                         last_cold_start_seconds=STARTUP_SECONDS)
        if action == "pin":
            state["pinned"] = True
        elif action == "release":
            state.update(state="cold", since=time.time(), pinned=False)
        keep_warm = float(DEPLOYMENT["keep_warm_seconds"])
        return {**state, "keep_warm_seconds": keep_warm,
                "keep_warm_left_seconds": keep_warm if state["state"] == "warm" and not state["pinned"] else None,
                "busy": 0, "release_mechanism": "reload", "device": "cpu", "device_name": "cpu",
                "weight_bytes_on_device": 0, "action": action, "was_cold_start": was_cold,
                "startup_seconds": STARTUP_SECONDS if was_cold else None}

    async def model_config(self) -> dict[str, Any]:
        """svd_xt's configuration as Triton serves it as JSON: the cpu config's parameters and the inputs."""
        return {"name": SVD_MODEL, "backend": "python", "max_batch_size": 4,
                "input": [{"name": name, "data_type": kind, "dims": ["1"], "optional": True}
                          for name, kind in inputs(SVD_MODEL).items()],
                "parameters": {name: {"string_value": value} for name, value in DEPLOYMENT.items()}}

    async def deployment(self) -> Deployment:
        """The deployment model_config describes, read as AsyncSVDClient reads it."""
        return Deployment.from_parameters(config_parameters(await self.model_config()))

    async def ready(self) -> bool:
        return self.is_ready

    async def close(self) -> None:
        pass


AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def gateway_on(model: FakeModel, data_dir: Path, **settings: Any) -> Iterator[TestClient]:
    """The gateway with `model` behind it, lifespan running, served in-process to a client sending the test key."""
    app = create_app(Settings(token=TOKEN, data_dir=data_dir, **settings), model=lambda _: model)
    with TestClient(app, headers=AUTHORIZED) as client:
        yield client
