"""The engine: load a pipeline once, validate requests, generate batches, encode videos."""
from __future__ import annotations

import gc
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .config import EngineConfig
from .errors import GenerationCancelled
from .loading import load_pipeline, resolve_device, resolve_dtype
from .pipeline import EnginePipeline, PhaseTimer
from .request import GenerationRequest, parse_request
from .video import VIDEO_FORMATS, encode_video


@dataclass(frozen=True)
class StepInfo:
    """Passed to the step hook after each denoising step of a batch."""

    step: int
    """Steps done so far, 1-based."""
    total: int
    batch: tuple[int, ...]
    """Indices (into the list given to `generate`) of the requests in this pipeline call."""
    elapsed: float


StepHook = Callable[[StepInfo], Any]
"""Return False to stop the batch: `generate` then raises GenerationCancelled before decoding."""


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
    """Seconds per phase: prep, encode (CLIP + VAE encode), denoise, decode (VAE), video_encode."""

    @property
    def mime_type(self) -> str:
        return VIDEO_FORMATS[self.video_format].mime_type

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.video if self.video is not None else b"")
        return path


class SVDEngine:
    """One loaded SVD pipeline plus the deployment's defaults and limits."""

    def __init__(self, pipeline: EnginePipeline, config: EngineConfig):
        self.pipeline = pipeline
        self.config = config
        self.device = pipeline.device

    @classmethod
    def load(cls, config: EngineConfig | None = None, **overrides) -> "SVDEngine":
        """Load from `config` (or EngineConfig(**overrides)); weights are moved to the configured device."""
        config = replace(config or EngineConfig(), **overrides)
        device = resolve_device(config.device)
        pipeline = load_pipeline(config.model_source, device=device, dtype=resolve_dtype(config.dtype, device))
        return cls(pipeline, config)

    @property
    def model_num_frames(self) -> int:
        return int(self.pipeline.unet.config.num_frames)

    def parse(self, image: Any, **params: Any) -> GenerationRequest:
        """Validate one request; raises InvalidRequest naming the field."""
        return parse_request(image, params, self.config, model_num_frames=self.model_num_frames)

    def generate(self, requests: Sequence[GenerationRequest], on_step: StepHook | None = None) -> list[GenerationResult]:
        """One result per request, in order; requests sharing a batch key run as one pipeline call."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[request.batch_key()].append(index)
        results: list[GenerationResult | None] = [None] * len(requests)
        for indices in groups.values():
            batch = [requests[i] for i in indices]
            for index, result in zip(indices, self._generate_batch(batch, tuple(indices), on_step)):
                results[index] = result
        return results

    @torch.inference_mode()
    def _generate_batch(self, batch: list[GenerationRequest], indices: tuple[int, ...],
                        on_step: StepHook | None) -> list[GenerationResult]:
        first = batch[0]
        timer = PhaseTimer(self.device)
        started = time.perf_counter()

        def step_end(pipeline, step, timestep, tensors):
            if on_step is not None:
                info = StepInfo(step + 1, first.num_inference_steps, indices, time.perf_counter() - started)
                if on_step(info) is False:
                    raise GenerationCancelled(f"stopped after step {step + 1} of {first.num_inference_steps}")
            return {}

        self.pipeline.phase_timer = timer
        try:
            video = self.pipeline(
                [request.image for request in batch],
                height=first.height, width=first.width, num_frames=first.num_frames,
                num_inference_steps=first.num_inference_steps, decode_chunk_size=first.decode_chunk_size,
                min_guidance_scale=first.min_guidance_scale, max_guidance_scale=first.max_guidance_scale,
                fps=torch.tensor([r.fps for r in batch]),
                motion_bucket_id=torch.tensor([r.motion_bucket_id for r in batch]),
                noise_aug_strength=torch.tensor([r.noise_aug_strength for r in batch], device=self.device).view(-1, 1, 1, 1),
                generator=[torch.Generator("cpu").manual_seed(r.seed) for r in batch],
                output_type="pt", callback_on_step_end=step_end, return_dict=False,
            )
            frames = (video * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
            timer.enter(None)
        finally:
            self.pipeline.phase_timer = None
        return [self._finish(request, clip, timer.seconds) for request, clip in zip(batch, frames)]

    @staticmethod
    def _finish(request: GenerationRequest, frames: np.ndarray, batch_seconds: dict[str, float]) -> GenerationResult:
        started = time.perf_counter()
        video = encode_video(frames, request.video_format, request.fps, request.video_quality) if request.encode else None
        timings = {"prep": request.prep_seconds, **batch_seconds, "video_encode": time.perf_counter() - started}
        return GenerationResult(video=video, frames=frames, video_format=request.video_format,
                                seed=request.seed, fps=request.fps, timings=timings)

    def close(self) -> None:
        """Drop the pipeline and return its memory (Triton's finalize)."""
        self.pipeline = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
