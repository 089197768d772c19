"""diffusers' SVD pipeline, adjusted so that batching never changes a request's video.

Three changes, each small: the micro-conditioning (fps, motion bucket, noise augmentation) may be
given per sample; the VAE decodes each video on its own (the stock pipeline chunks the flattened
batch×frames axis, so a chunk could straddle two videos and mix them in the temporal decoder);
and phase boundaries are reported to an optional `PhaseTimer` for timings and progress.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from diffusers import StableVideoDiffusionPipeline
from diffusers.schedulers import AysSchedules

AYS_SIGMAS: tuple[float, ...] = tuple(cast(list[float], AysSchedules["StableDiffusionVideoSigmas"]))
"""NVIDIA's Align Your Steps noise levels for SVD at 10 steps, as diffusers ships them: 11 sigmas from 700
down to 0, the final 0 included (a scheduler given `sigmas=` uses them as they are and appends nothing)."""
AYS_SIGMA_MIN = 0.002
"""Where NVIDIA's published list ends (SVD's sigma_min); diffusers writes the 0 the last step goes to instead."""


def schedule_sigmas(schedule: str, num_inference_steps: int) -> list[float] | None:
    """The sigmas to pass as the pipeline's `sigmas=` for a request's schedule; None for `karras`, which
    leaves the scheduler its own (Karras) sigmas.

    `ays` at 10 steps is AYS_SIGMAS exactly; at any other count it is the 11-point list log-linearly
    interpolated onto num_inference_steps + 1 points, its last set to 0 (NVIDIA's and ComfyUI's
    `loglinear_interp`, over the published list, which ends at sigma_min rather than 0).
    """
    if schedule == "karras":
        return None
    if schedule != "ays":
        raise ValueError(f"unknown schedule {schedule!r}")
    if num_inference_steps + 1 == len(AYS_SIGMAS):
        return list(AYS_SIGMAS)
    published = np.array([*AYS_SIGMAS[:-1], AYS_SIGMA_MIN])
    log_sigmas = np.interp(
        np.linspace(0, 1, num_inference_steps + 1), np.linspace(0, 1, len(published)), np.log(published[::-1])
    )
    sigmas = np.exp(log_sigmas)[::-1]
    sigmas[0], sigmas[-1] = AYS_SIGMAS[0], 0.0  # the first exactly 700 (exp∘log may be an ulp off)
    return sigmas.tolist()


@contextlib.contextmanager
def unet_replaced(pipeline, stand_in: Callable[[Any], Any]):
    """`pipeline.unet` replaced by `stand_in(the UNet standing there as the block is entered)` for one pipeline
    call (the feature cache's and the conditional-only steps' wrappers, nested), put back however the call ends."""
    original = pipeline.unet
    replacement = stand_in(original)
    # Straight into the instance dict: DiffusionPipeline.__setattr__ would rewrite the pipeline's config.
    vars(pipeline)["unet"] = replacement
    try:
        yield replacement
    finally:
        vars(pipeline)["unet"] = original


def uint8_frames(video: torch.Tensor) -> np.ndarray:
    """The pipeline's `output_type="pt"` videos (B×F×3×H×W, 0..1) as B×F×H×W×3 uint8, rounded."""
    return (video * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()


class PhaseTimer:
    """Seconds spent in each named phase; synchronises CUDA at boundaries so GPU time is attributed."""

    def __init__(self, device: torch.device, on_phase: Callable[[str], None] | None = None):
        self.device = torch.device(device)
        self.on_phase = on_phase
        self.seconds: dict[str, float] = {}
        self._phase: str | None = None
        self._started = 0.0

    def enter(self, phase: str | None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if self._phase is not None:
            self.seconds[self._phase] = self.seconds.get(self._phase, 0.0) + now - self._started
        self._phase, self._started = phase, now
        if phase is not None and self.on_phase is not None:
            self.on_phase(phase)


# The private methods of StableVideoDiffusionPipeline that EnginePipeline overrides, with the
# parameters it relies on; diffusers offers no public hook for per-sample micro-conditioning or for
# the phase boundaries. pyproject.toml pins diffusers to the minor range these were read from.
OVERRIDDEN = {
    "_encode_image": ("image", "device", "num_videos_per_prompt", "do_classifier_free_guidance"),
    "_encode_vae_image": ("image", "device", "num_videos_per_prompt", "do_classifier_free_guidance"),
    "_get_add_time_ids": (
        "fps",
        "motion_bucket_id",
        "noise_aug_strength",
        "dtype",
        "batch_size",
        "num_videos_per_prompt",
        "do_classifier_free_guidance",
    ),
    "decode_latents": ("latents", "num_frames", "decode_chunk_size"),
}

UNCONDITIONAL_FIRST = {
    "_encode_image": "torch.cat([negative_image_embeddings, image_embeddings])",
    "_encode_vae_image": "torch.cat([negative_image_latents, image_latents])",
    "__call__": "noise_pred_uncond, noise_pred_cond = noise_pred.chunk(2)",
}
"""Where diffusers puts guidance's unconditional half first, which conditional_final_steps (svd_engine.guidance)
relies on to take the conditional half alone."""


def diffusers_mismatches() -> list[str]:
    """What changed in the installed diffusers under EnginePipeline's overrides (empty when nothing did)."""
    import diffusers

    problems = []
    call_source = inspect.getsource(StableVideoDiffusionPipeline.__call__)
    if "sigmas" not in inspect.signature(StableVideoDiffusionPipeline.__call__).parameters:
        problems.append("StableVideoDiffusionPipeline.__call__ no longer takes sigmas (schedule=ays passes them)")
    for name, line in UNCONDITIONAL_FIRST.items():
        method = getattr(StableVideoDiffusionPipeline, name, None)
        if method is not None and line not in inspect.getsource(method):  # a missing one is reported below
            problems.append(f"StableVideoDiffusionPipeline.{name} no longer has `{line}` (conditional_final_steps)")
    for name, expected in OVERRIDDEN.items():
        method = getattr(StableVideoDiffusionPipeline, name, None)
        if method is None:
            problems.append(f"StableVideoDiffusionPipeline.{name} no longer exists")
            continue
        found = tuple(inspect.signature(method).parameters)[1:]
        if found != expected:
            problems.append(f"StableVideoDiffusionPipeline.{name}{found} no longer takes {expected}")
        if f"self.{name}(" not in call_source:
            problems.append(f"StableVideoDiffusionPipeline.__call__ no longer calls self.{name}")
    return [f"diffusers {diffusers.__version__}: {problem}" for problem in problems]


class EnginePipeline(StableVideoDiffusionPipeline):
    phase_timer: PhaseTimer | None = None

    def _enter(self, phase: str) -> None:
        if self.phase_timer is not None:
            self.phase_timer.enter(phase)

    def _encode_image(self, *args, **kwargs):
        self._enter("preparing")  # CLIP image embedding, then the VAE encode of the conditioning image
        return super()._encode_image(*args, **kwargs)

    def _encode_vae_image(self, *args, **kwargs):
        latents = super()._encode_vae_image(*args, **kwargs)
        self._enter("denoising")
        return latents

    def _get_add_time_ids(
        self,
        fps,
        motion_bucket_id,
        noise_aug_strength,
        dtype,
        batch_size,
        num_videos_per_prompt,
        do_classifier_free_guidance,
    ):
        """Like the stock method, but each of the three values may be a scalar or one per sample."""
        columns = [
            torch.as_tensor(value, dtype=torch.float64).reshape(-1).cpu().expand(batch_size)
            for value in (fps, motion_bucket_id, noise_aug_strength)
        ]
        add_time_ids = torch.stack(columns, dim=1).to(dtype).repeat_interleave(num_videos_per_prompt, dim=0)
        if do_classifier_free_guidance:
            add_time_ids = torch.cat([add_time_ids, add_time_ids])
        return add_time_ids

    def decode_latents(self, latents: torch.Tensor, num_frames: int, decode_chunk_size: int = 14):
        self._enter("decoding")
        return torch.cat(
            [
                super(EnginePipeline, self).decode_latents(video[None], num_frames, decode_chunk_size)
                for video in latents
            ]
        )
