"""The generation request, validated in one place.

svd_contract.PARAMETERS is the table of request fields and their static ranges; `parse_request` adds the
deployment defaults and the limits that depend on the deployment or on other fields, and returns a
frozen `GenerationRequest` whose values are all valid. Every violation raises `InvalidRequest`.
"""

from __future__ import annotations

import math
import secrets
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from svd_contract import FIXED_DEFAULTS, MAX_SIDE, PARAMETERS, PRESETS, VIDEO_FORMATS, InvalidRequest

from . import images
from .config import EngineConfig
from .postprocess import MIN_CROSSFADE_FRAMES, interpolated_frame_count, joined_frame_count, output_frame_count

SHALLOW_STEP_COST = (0.42, 0.70, 0.96, 0.99)
"""What a cached (shallow) UNet step costs, as a share of a whole one, by cache_branch_id: floating-point
operations counted on SVD-XT's UNet at 1024×576 and 25 frames (`python -m benchmarks.feature_cache
--count-flops` counts them again), rounded up. Other UNets are charged by the same table."""
CONDITIONAL_STEP_COST = 0.5
"""What a conditional-only step (conditional_final_steps) costs, as a share of a guided one: the UNet runs on
the conditional half of the batch alone, and its operations are linear in the batch."""


@dataclass(frozen=True)
class GenerationRequest:
    """A fully validated request; `image` is RGB at exactly width×height."""

    image: Image.Image = field(repr=False)
    width: int
    height: int
    resize_mode: str
    num_frames: int
    num_inference_steps: int
    preset: str
    """The speed preset the unset fields came from (svd_contract PRESETS); the fields themselves say what runs."""
    schedule: str
    """The noise schedule (svd_contract SCHEDULES): karras, the scheduler's own, or ays (Align Your Steps)."""
    fps: int
    motion_bucket_id: int
    noise_aug_strength: float
    min_guidance_scale: float
    max_guidance_scale: float
    conditional_final_steps: int
    """The last denoising steps of each segment that run the conditional UNet pass alone (0: guided throughout)."""
    decode_chunk_size: int
    seed: int
    video_format: str
    video_quality: int | None
    segments: int
    """Clips generated one after another, each from the last frame of the one before."""
    interpolate: int
    """Frame-rate multiplier of motion-compensated interpolation (1: none)."""
    loop: str
    cache_interval: int
    """Feature caching: the whole UNet on steps 0, k, 2k, … of each segment, its shallow branch between (1: off)."""
    cache_branch_id: int
    """The UNet skip branch the cached steps recompute (0: the shallowest); unused while cache_interval is 1."""
    prep_seconds: float = 0.0
    encode: bool = True
    """False when the caller wants only the frames: no video file is written."""

    @property
    def output_fps(self) -> int:
        """The delivered video's frame rate: interpolation multiplies it."""
        return self.fps * self.interpolate

    @property
    def output_frames(self) -> int:
        """Frames of the delivered video, after joining segments, interpolating and looping."""
        return output_frame_count(self.num_frames, self.segments, self.interpolate, self.loop)

    @property
    def whole_steps(self) -> int:
        """Denoising steps of each segment that run the whole UNet: steps 0, k, 2k, … with feature caching."""
        return math.ceil(self.num_inference_steps / self.cache_interval)

    @property
    def conditional_steps(self) -> int:
        """The final steps of each segment that run without the unconditional pass: conditional_final_steps
        while guidance is on (max_guidance_scale > 1); without guidance there is no such pass to drop."""
        return self.conditional_final_steps if self.max_guidance_scale > 1 else 0

    @property
    def unet_steps(self) -> float:
        """The denoising work of one segment in whole UNet steps: cached steps count by their branch's share,
        conditional-only steps by CONDITIONAL_STEP_COST of that."""
        cached = self.num_inference_steps - self.whole_steps
        steps = self.whole_steps + cached * SHALLOW_STEP_COST[self.cache_branch_id] if cached else self.whole_steps
        if not self.conditional_steps:
            return steps
        first = self.num_inference_steps - self.conditional_steps
        whole = sum(1 for step in range(first, self.num_inference_steps) if step % self.cache_interval == 0)
        window = whole + (self.conditional_steps - whole) * SHALLOW_STEP_COST[self.cache_branch_id]
        return steps - (1 - CONDITIONAL_STEP_COST) * window

    @property
    def work(self) -> int:
        """What max_work bounds: width × height × num_frames × unet_steps × segments, rounded up."""
        return math.ceil(self.width * self.height * self.num_frames * self.unet_steps * self.segments)

    def batch_key(self) -> tuple:
        """Requests with equal keys can run as one pipeline call: shapes, schedule, guidance (its conditional-only
        steps included) and feature caching agree (a batch's UNet runs whole or shallow, guided or conditional
        only, for all its samples at once)."""
        caching = (self.cache_interval, self.cache_branch_id) if self.cache_interval > 1 else ()
        return (
            self.width,
            self.height,
            self.num_frames,
            self.num_inference_steps,
            self.schedule,
            self.decode_chunk_size,
            self.min_guidance_scale,
            self.max_guidance_scale,
            self.conditional_steps,
            *caching,
        )


def parse_request(
    image: Any,
    params: Mapping[str, Any],
    config: EngineConfig,
    *,
    model_num_frames: int,
    model_branches: int | None = None,
    precision: str = "float32",
) -> GenerationRequest:
    """Validate `params` (None values mean 'use the default') and prepare `image` for generation.

    Three stages, in this order: each field alone (type, static range); then everything that can
    change what the request costs is resolved (defaults, the image, the size `keep` takes from it);
    then `check_limits` runs once on the final request. No request reaches the engine without it.
    `model_branches` (the UNet's down blocks) bounds cache_branch_id below the contract's bound; `precision` is
    the dtype the model computes in (a guidance scale is rounded to it).
    """
    started = time.perf_counter()
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown parameter {unknown[0]!r}; accepted: {', '.join(PARAMETERS)}")
    params = {name: value for name, value in params.items() if value is not None}
    num_frames = PARAMETERS["num_frames"].coerce(
        params.get("num_frames", config.default_num_frames or model_num_frames), high=config.max_num_frames
    )
    bounds = {
        "num_frames": config.max_num_frames,
        "decode_chunk_size": num_frames,
        "segments": config.max_segments,
        "cache_interval": config.max_cache_interval,
        "cache_branch_id": model_branches - 1 if model_branches else None,
    }
    given = {name: PARAMETERS[name].coerce(value, high=bounds.get(name)) for name, value in params.items()}
    values = {
        **FIXED_DEFAULTS,
        "width": config.default_width,
        "height": config.default_height,
        "num_frames": num_frames,
        "num_inference_steps": config.default_num_inference_steps,
        "fps": config.default_fps,
        "decode_chunk_size": min(config.default_decode_chunk_size, num_frames),
        "video_format": config.default_video_format,
        "video_quality": None,
        "seed": secrets.randbits(63),
        **PRESETS[given.get("preset", FIXED_DEFAULTS["preset"])],
        **given,
    }
    if "conditional_final_steps" not in given:  # a preset's window fits the steps the request asked for
        values["conditional_final_steps"] = min(values["conditional_final_steps"], values["num_inference_steps"])
    if values["resize_mode"] == "keep":
        clash = sorted({"width", "height"} & set(given))
        if clash:
            raise InvalidRequest(
                clash[0], "resize_mode=keep takes the size from the image; leave width and height unset"
            )
    picture = images.load_image(image, max_bytes=config.max_image_bytes, max_pixels=config.max_image_pixels)
    if values["resize_mode"] == "keep":
        values["width"], values["height"] = images.keep_size(picture, max_pixels=config.max_pixels, max_side=MAX_SIDE)
    request = GenerationRequest(image=picture, **values)
    check_limits(request, config, precision)
    resized = images.resize(picture, request.width, request.height, request.resize_mode)
    return replace(request, image=resized, prep_seconds=time.perf_counter() - started)


EPSILON = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23}
"""The gap between 1 and the next number of each precision the model computes in."""


def check_guidance_precision(max_guidance_scale: float, precision: str) -> None:
    """A scale above 1 by under half the precision's gap is 1 once the pipeline has rounded it to float32 (its
    linspace) and cast it to the model's dtype: diffusers then decides mid-run that there is no guidance after
    doubling the batch for it, and fails. Refused, naming the values that work."""
    epsilon = EPSILON[precision]
    as_float32 = struct.unpack("f", struct.pack("f", max_guidance_scale))[0]
    if 1 < max_guidance_scale and as_float32 <= 1 + epsilon / 2:
        least = math.ceil((1 + epsilon) * 1000) / 1000
        raise InvalidRequest(
            "max_guidance_scale",
            f"max_guidance_scale={max_guidance_scale} is 1 in {precision}, the precision this deployment computes "
            f"in: give 1 (no guidance) or at least {least:g}",
        )


def check_limits(request: GenerationRequest, config: EngineConfig, precision: str = "float32") -> None:
    """Every limit that depends on the deployment or on several fields, checked on the final request."""
    size = f"width×height={request.width}×{request.height}" + (
        " (resize_mode=keep: the image's size)" if request.resize_mode == "keep" else ""
    )
    if request.num_frames > config.max_num_frames:
        PARAMETERS["num_frames"].coerce(request.num_frames, high=config.max_num_frames)
    if request.segments > config.max_segments:
        PARAMETERS["segments"].coerce(request.segments, high=config.max_segments)
    if request.cache_interval > config.max_cache_interval:
        PARAMETERS["cache_interval"].coerce(request.cache_interval, high=config.max_cache_interval)
    if request.decode_chunk_size > request.num_frames:
        PARAMETERS["decode_chunk_size"].coerce(request.decode_chunk_size, high=request.num_frames)
    if request.conditional_final_steps > request.num_inference_steps:
        PARAMETERS["conditional_final_steps"].coerce(request.conditional_final_steps, high=request.num_inference_steps)
    if request.min_guidance_scale > request.max_guidance_scale:
        raise InvalidRequest(
            "min_guidance_scale",
            f"min_guidance_scale={request.min_guidance_scale:g} is greater than "
            f"max_guidance_scale={request.max_guidance_scale:g}",
        )
    check_guidance_precision(request.max_guidance_scale, precision)
    pixels = request.width * request.height
    if pixels > config.max_pixels:
        raise InvalidRequest(
            "width", f"{size} = {pixels} pixels is over this deployment's max_pixels limit of {config.max_pixels}"
        )
    if request.work > config.max_work:
        field_name = "segments" if request.segments > 1 else "num_frames"
        savings = []
        if request.whole_steps < request.num_inference_steps:
            savings.append(
                f"feature caching: {request.whole_steps} whole UNet steps, "
                f"{request.num_inference_steps - request.whole_steps} cached at "
                f"{SHALLOW_STEP_COST[request.cache_branch_id]:g} of one"
            )
        if request.conditional_steps:
            savings.append(f"the last {request.conditional_steps} conditional only, at {CONDITIONAL_STEP_COST:g}")
        steps = f"{request.unet_steps:g} ({'; '.join(savings)})" if savings else f"{request.num_inference_steps}"
        raise InvalidRequest(
            field_name,
            f"width×height×num_frames×num_inference_steps×segments = {request.width}×{request.height}×"
            f"{request.num_frames}×{steps}×{request.segments} = {request.work} is over this "
            f"deployment's max_work budget of {config.max_work}; ask for fewer segments, frames, steps or pixels"
            + (" (resize_mode=keep took the size from the image)" if request.resize_mode == "keep" else ""),
        )
    before_loop = interpolated_frame_count(
        joined_frame_count(request.num_frames, request.segments), request.interpolate
    )
    if request.loop == "crossfade" and before_loop < MIN_CROSSFADE_FRAMES:
        raise InvalidRequest(
            "loop",
            f"loop=crossfade needs at least {MIN_CROSSFADE_FRAMES} frames to blend; "
            "ask for more frames, segments or interpolation",
        )
    if request.output_frames > config.max_output_frames:
        culprit = "interpolate" if request.interpolate > 1 else "loop" if request.loop != "none" else "segments"
        raise InvalidRequest(
            culprit,
            f"the video would have {request.output_frames} frames (num_frames={request.num_frames}, "
            f"segments={request.segments}, interpolate={request.interpolate}, loop={request.loop}), over "
            f"this deployment's max_output_frames limit of {config.max_output_frames}",
        )
    if request.video_quality is not None:
        VIDEO_FORMATS[request.video_format].check_quality(request.video_quality)
