"""The engine: load a pipeline once, validate requests, generate batches, encode videos."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from svd_contract import progress

from . import postprocess, residency
from .base import ResidentEngine
from .config import EngineConfig
from .errors import GenerationCancelled, ModelLoadError, OutOfMemory
from .fast_path import FastPath
from .feature_cache import CachePlan, FeatureCache
from .guidance import conditional_final_steps
from .loading import load_pipeline, resolve_device, resolve_dtype
from .pipeline import EnginePipeline, PhaseTimer, diffusers_mismatches, schedule_sigmas, uint8_frames
from .request import GenerationRequest, parse_request
from .video import VIDEO_FORMATS, encode_video

ALLOCATION = re.compile(r"Tried to allocate ([\d.]+ [KMGT]?i?B)")
"""What torch's out-of-memory message says one allocation asked for: the memory a request named in its error."""
log = logging.getLogger(__name__)
ENCODING_THREADS = 2
WARM_UP_STEPS = 2
"""Denoising steps of each warm-up generation: the compiled graphs do not depend on the step count."""


@dataclass(frozen=True)
class Progress(progress.Progress):
    """Passed to the progress hook at each phase change and after each denoising step of a batch: the
    contract's message (what a streaming model sends as PROGRESS) and the requests it is about.
    `elapsed` counts from the start of this batch; `segments` is the most any request of the event asked for."""

    batch: tuple[int, ...] = ()
    """Indices (into the list given to `generate`) of the requests this event is about."""


ProgressHook = Callable[[Progress], Any]
CancelCheck = Callable[[int], bool]
"""Given a request's index, True once its client has given up."""


@dataclass
class GenerationResult:
    video: bytes | None
    """The encoded file (None when encoding was not asked for)."""
    frames: np.ndarray = field(repr=False)
    """F×H×W×3 uint8."""
    video_format: str
    seed: int
    fps: int
    timings: dict[str, float]
    """Seconds per phase: image (decode, resize), preparing, denoising, decoding, encoding."""

    @property
    def mime_type(self) -> str:
        return VIDEO_FORMATS[self.video_format].mime_type

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.video if self.video is not None else b"")
        return path


class SVDEngine(ResidentEngine):
    """One loaded SVD pipeline plus the deployment's defaults, limits and fast path."""

    config_class = EngineConfig

    def __init__(self, pipeline: EnginePipeline, config: EngineConfig, fast_path: FastPath | None = None):
        super().__init__(pipeline, config)
        self.fast_path = fast_path or FastPath(replace(config, fast_path="off"), self.device)
        self.feature_cache = FeatureCache(pipeline.unet, self.fast_path.compile_region)
        self.model_num_frames = int(pipeline.unet.config.num_frames)
        self.compile_seconds = 0.0
        """What the last load spent compiling (the warm-up generations included); 0 when nothing compiles."""
        self._encoder = ThreadPoolExecutor(ENCODING_THREADS, thread_name_prefix="svd-encode")

    @classmethod
    def load(cls, config: EngineConfig | None = None, **overrides) -> SVDEngine:
        """Load from `config` (or EngineConfig(**overrides)) onto the configured device, fast path applied and warm."""
        config = replace(config or EngineConfig(), **overrides)
        mismatches = diffusers_mismatches()
        if mismatches:
            raise ModelLoadError(
                "this diffusers is not the one svd_engine was written for: "
                + "; ".join(mismatches)
                + "; install the range pyproject.toml pins"
            )
        return cls.from_pipeline(_load(config), config)

    @classmethod
    def from_pipeline(cls, pipeline: EnginePipeline, config: EngineConfig) -> SVDEngine:
        """Apply the configured fast path to a loaded pipeline and compile it (when configured) before returning."""
        fast_path = FastPath(config, pipeline.device)
        fast_path.apply(pipeline)
        engine = cls(pipeline, config, fast_path)
        engine._warm_up()
        return engine

    def _warm_up(self) -> None:
        """Compile for the default request shape at batch sizes 1..compile_batch_size (guided, cached and
        conditional-only steps), here rather than per request."""
        if not self.fast_path.compiles:
            return
        started = time.perf_counter()
        gray = np.full((self.config.default_height, self.config.default_width, 3), 128, np.uint8)
        request = replace(self.parse(gray, num_inference_steps=WARM_UP_STEPS), encode=False)
        # Feature caching runs the UNet block by block (compiled one by one): one whole and one shallow
        # step compile those graphs, which serve every interval and branch. Not where it is turned off.
        cached = replace(request, cache_interval=WARM_UP_STEPS)
        warm_ups = [request, cached] if self.config.max_cache_interval > 1 else [request]
        # A conditional-only step runs the UNet on one sample per request, a guided one on two: an even number
        # of requests' conditional batch is a guided batch compiled already, an odd number's is compiled here.
        conditional = [replace(r, conditional_final_steps=WARM_UP_STEPS) for r in warm_ups]
        for batch_size in range(1, self.config.compile_batch_size + 1):
            odd = batch_size % 2 == 1 and self.config.compile_conditional
            for warm_up in warm_ups + (conditional if odd else []):
                self.generate([warm_up] * batch_size)
        self.fast_path.ready = True
        self.compile_seconds = time.perf_counter() - started
        log.info(
            "compiled for %d×%d, %d frames in %.1f s",
            request.width,
            request.height,
            request.num_frames,
            self.compile_seconds,
        )

    def describe(self) -> str:
        return self.fast_path.describe()

    def _reload(self) -> None:
        """Load again, apply the fast path and compile again: reload costs that on top of the load."""
        self.pipeline = _load(self.config)
        self.fast_path = FastPath(self.config, self.device)
        self.fast_path.apply(self.pipeline)
        self.feature_cache = FeatureCache(self.pipeline.unet, self.fast_path.compile_region)
        self.released = False
        self._warm_up()

    def parse(self, image: Any, **params: Any) -> GenerationRequest:
        """Validate one request; raises InvalidRequest naming the field."""
        return parse_request(
            image,
            params,
            self.config,
            model_num_frames=self.model_num_frames,
            model_branches=self.feature_cache.branches,
            precision=str(resolve_dtype(self.config.dtype, self.device)).removeprefix("torch."),
        )

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_progress: ProgressHook | None = None,
        cancelled: CancelCheck | None = None,
    ) -> list:
        """One outcome per request, in order: its GenerationResult, or the exception it ended with (like
        `asyncio.gather(..., return_exceptions=True)`); requests sharing a batch key run as one pipeline call.

        A request that does not fit in device memory even alone ends with OutOfMemory; a batch that
        runs out of memory is retried one request at a time.

        With `cancelled`, a request whose client gave up ends with GenerationCancelled. It is checked
        at every phase change and denoising step: a pipeline call whose requests are all cancelled
        stops there; otherwise the call finishes for the others and the cancelled sample is dropped
        before video encoding (diffusers' loop keeps the batch's conditioning tensors as locals, so a
        sample cannot leave the batch mid-loop). With `segments`, each continuation segment is a further
        pipeline call for the requests still live that asked for it, so cancellation also takes effect
        between segments.
        """
        futures = self.submit(requests, on_progress, cancelled)
        return [future.exception() or future.result() for future in futures]

    def submit(
        self,
        requests: Sequence[GenerationRequest],
        on_progress: ProgressHook | None = None,
        cancelled: CancelCheck | None = None,
    ) -> list[Future]:
        """Like `generate`, but returns once the device work is done: each slot is a Future that
        resolves when that request's video is encoded, or holds the exception the request ended with.
        Encoding runs on worker threads, so it overlaps the next pipeline call, in this batch or the
        caller's next one."""
        futures: list = [None] * len(requests)
        with self._device_lock:
            self.restore()
            for indices in self._pipeline_calls(requests):
                for index, future in zip(indices, self._generate_group(requests, indices, on_progress, cancelled)):
                    futures[index] = future
        return futures

    def _pipeline_calls(self, requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """Indices grouped by batch key; split to the compiled batch sizes when the fast path compiled."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[request.batch_key()].append(index)
        limit = self.config.compile_batch_size if self.fast_path.compiles else len(requests)
        return [
            indices[start : start + limit] for indices in groups.values() for start in range(0, len(indices), limit)
        ]

    def _generate_group(self, requests, indices, on_progress, cancelled) -> list[Future]:
        """One pipeline call; when it runs out of memory, each request alone, so only what cannot fit fails."""
        batch = _Batch([requests[i] for i in indices], tuple(indices), on_progress, cancelled)
        try:
            return self._generate_batch(batch)
        except torch.OutOfMemoryError as error:
            residency.release_memory(self.device)
            wanted = ALLOCATION.search(str(error))
        if len(indices) == 1:
            request = requests[indices[0]]
            asked = f" (one allocation asked for {wanted.group(1)} more)" if wanted else ""
            return [
                _failed(
                    OutOfMemory(
                        f"out of {self.device.type.upper()} memory for {request.width}×{request.height}, "
                        f"{request.num_frames} frames{asked}; try fewer frames, a smaller size or a smaller "
                        "decode_chunk_size"
                    )
                )
            ]
        return [
            future for index in indices for future in self._generate_group(requests, [index], on_progress, cancelled)
        ]

    @torch.inference_mode()
    def _generate_batch(self, batch: _Batch) -> list[Future]:
        """Segment 1 for the whole batch, then each continuation segment for the requests that asked
        for it, conditioned on the last frame of their video so far."""
        timer = PhaseTimer(self.device, on_phase=batch.enter_phase)
        videos: list[np.ndarray | None] = [None] * len(batch.requests)
        stopped: dict[int, GenerationCancelled] = {}
        self.pipeline.phase_timer = timer
        try:
            for segment in range(1, batch.segments + 1):
                positions = batch.start_segment(segment)
                if not positions:
                    break
                images = [
                    batch.requests[p].image if segment == 1 else Image.fromarray(_so_far(videos[p])[-1])
                    for p in positions
                ]
                try:
                    clips = self._pipeline_call(batch, positions, images, segment)
                except GenerationCancelled as stop:
                    batch.live -= set(positions)
                    stopped.update(dict.fromkeys(positions, stop))
                    break
                for position, clip in zip(positions, clips):
                    if segment == 1:
                        videos[position] = clip
                    else:
                        if self.config.match_segment_colors:
                            clip = postprocess.match_colors(
                                clip, _so_far(videos[position])[: batch.requests[position].num_frames]
                            )
                        videos[position] = postprocess.join_segment(_so_far(videos[position]), clip)
                timer.enter(None)
        finally:
            self.pipeline.phase_timer = None
        return [
            _failed(stopped[position])
            if position in stopped
            else self._encoder.submit(batch.finish, position, _so_far(video), timer.seconds)
            for position, video in enumerate(videos)
        ]

    def _pipeline_call(self, batch: _Batch, positions: list[int], images: list, segment: int) -> np.ndarray:
        """One diffusers call for the requests at `positions`; B×F×H×W×3 uint8 frames."""
        requests = [batch.requests[p] for p in positions]
        first = requests[0]

        def step_end(pipeline, step, timestep, tensors):
            batch.report("denoising", step + 1)
            self.fast_path.before_unet_call()
            return {}

        self.fast_path.before_unet_call()
        caching = (
            self.feature_cache.applied(self.pipeline, CachePlan(first.cache_interval, first.cache_branch_id))
            if first.cache_interval > 1
            else contextlib.nullcontext()
        )
        # Inside the caching: the conditional-only steps run whatever UNet stands there, the cached one included.
        guidance = (
            conditional_final_steps(self.pipeline, first.conditional_steps)
            if first.conditional_steps
            else contextlib.nullcontext()
        )
        with self.fast_path.request_context(), caching, guidance:
            video = self.pipeline(
                images,
                height=first.height,
                width=first.width,
                num_frames=first.num_frames,
                num_inference_steps=first.num_inference_steps,
                sigmas=schedule_sigmas(first.schedule, first.num_inference_steps),
                decode_chunk_size=first.decode_chunk_size,
                min_guidance_scale=first.min_guidance_scale,
                max_guidance_scale=first.max_guidance_scale,
                fps=torch.tensor([r.fps for r in requests]),
                motion_bucket_id=torch.tensor([r.motion_bucket_id for r in requests]),
                noise_aug_strength=torch.tensor([r.noise_aug_strength for r in requests], device=self.device).view(
                    -1, 1, 1, 1
                ),
                generator=[torch.Generator("cpu").manual_seed(segment_seed(r.seed, segment)) for r in requests],
                output_type="pt",
                callback_on_step_end=step_end,
                return_dict=False,
            )
        return uint8_frames(video)

    def close(self) -> None:
        """Finish pending encodings, then drop the pipeline and return its memory (Triton's finalize)."""
        self._encoder.shutdown(wait=True)
        super().close()


def _load(config: EngineConfig) -> EnginePipeline:
    device = resolve_device(config.device)
    return load_pipeline(config.model_source, device=device, dtype=resolve_dtype(config.dtype, device))


def segment_seed(seed: int, segment: int) -> int:
    """The seed of one segment: the request's own for the first, derived from it for the others."""
    if segment == 1:
        return seed
    return int(np.random.SeedSequence([seed, segment]).generate_state(1, np.uint64)[0]) >> 1


def _failed(error: BaseException) -> Future[Any]:
    """A Future already holding `error`: the outcome of a request that ended before encoding."""
    future: Future[Any] = Future()
    future.set_exception(error)
    return future


def _so_far(video: np.ndarray | None) -> np.ndarray:
    """A request's frames so far, which its first segment made: every request it did not stop has them."""
    assert video is not None, "segment 1 made a video for every request it did not stop"
    return video


class _Batch:
    """One pipeline call's requests, its progress reporting and its cancellation bookkeeping."""

    def __init__(
        self,
        requests: list[GenerationRequest],
        indices: tuple[int, ...],
        on_progress: ProgressHook | None,
        cancelled: CancelCheck | None,
    ):
        self.requests = requests
        self.indices = indices
        self.on_progress = on_progress
        self.cancelled = cancelled
        self.live = set(range(len(requests)))
        self.active = set(self.live)
        """Positions in the pipeline call now running."""
        self.segment = 1
        self.segments = max(request.segments for request in requests)
        self.step = 0
        self.started = time.perf_counter()

    def start_segment(self, segment: int) -> list[int]:
        """The live positions that asked for at least `segment` segments, which the next call runs."""
        self.segment, self.step = segment, 0
        self.active = {p for p in self.live if self.requests[p].segments >= segment}
        return sorted(self.active)

    def enter_phase(self, phase: str) -> None:
        self.report(phase, self.step)

    def report(self, phase: str, step: int) -> None:
        """Drop cancelled requests, stop if none is left, then tell the hook where the batch is."""
        self.step = step
        if self.cancelled is not None:
            self.live = {p for p in self.live if not self.cancelled(self.indices[p])}
            if not self.live & self.active:
                total = self.requests[0].num_inference_steps
                raise GenerationCancelled(
                    f"cancelled by the client in {phase} of segment {self.segment}, after step {step} of {total}"
                )
        self._notify(phase, sorted(self.live & self.active))

    def _notify(self, phase: str, positions: Sequence[int]) -> None:
        if self.on_progress is not None:
            self.on_progress(
                Progress(
                    phase,
                    self.step,
                    self.requests[0].num_inference_steps,
                    time.perf_counter() - self.started,
                    self.segment,
                    max(self.requests[p].segments for p in positions),
                    batch=tuple(self.indices[p] for p in positions),
                )
            )

    def finish(self, position: int, frames: np.ndarray, batch_seconds: dict[str, float]):
        """The result for one request of the batch, its video encoded; raises GenerationCancelled."""
        request = self.requests[position]
        if self.cancelled is not None and self.cancelled(self.indices[position]):
            self.live.discard(position)
        if position not in self.live:
            raise GenerationCancelled("cancelled by the client; its batch finished for the others")
        started = time.perf_counter()
        video = None
        if request.encode:
            self._notify("encoding", [position])
        # Interpolation and looping count as encoding: they are per-request work on the encoder threads.
        frames = postprocess.finish_frames(frames, request.interpolate, request.loop, request.fps)
        if request.encode:
            video = encode_video(frames, request.video_format, request.output_fps, request.video_quality)
        timings = {"image": request.prep_seconds, **batch_seconds, "encoding": time.perf_counter() - started}
        return GenerationResult(
            video=video,
            frames=frames,
            video_format=request.video_format,
            seed=request.seed,
            fps=request.output_fps,
            timings=timings,
        )
