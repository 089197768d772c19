"""The generation request: one declared schema, validated in one place.

`PARAMETERS` is the single table of request fields and their static ranges; `parse_request` adds the
deployment defaults and the limits that depend on the deployment or on other fields, and returns a
frozen `GenerationRequest` whose values are all valid. Every violation raises `InvalidRequest`.
"""
from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np
from PIL import Image

from . import images
from .config import EngineConfig
from .errors import InvalidRequest
from .postprocess import LOOPS, MIN_CROSSFADE_FRAMES, interpolated_frame_count, joined_frame_count, output_frame_count
from .video import VIDEO_FORMATS

MAX_SEED = 2**63 - 1
MAX_SIDE = 2048


@dataclass(frozen=True)
class Parameter:
    """One request field: its type and static range (None where the range depends on the deployment)."""

    name: str
    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    multiple_of: int = 1
    help: str = ""
    """One sentence for people: CLI and playground show it beside the control."""

    def coerce(self, value: Any, high: float | None = None):
        """The value converted to `kind` and range-checked; `high` supplies a bound set by the deployment."""
        if self.kind is str:
            return self._coerce_choice(value)
        bounded = self if high is None else replace(self, high=high)
        number = _as_number(self.name, value, integer=self.kind is int)
        if (self.low is not None and number < self.low) or (bounded.high is not None and number > bounded.high):
            raise InvalidRequest(self.name, f"{self.name}={number} is out of range; accepted: {bounded.describe()}")
        if self.kind is int and number % self.multiple_of:
            raise InvalidRequest(self.name, f"{self.name}={number} must be a multiple of {self.multiple_of}; accepted: {bounded.describe()}")
        return number

    def _coerce_choice(self, value: Any) -> str:
        if isinstance(value, (bytes, np.bytes_)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(self.name, f"{self.name} is not valid UTF-8; accepted: {self.describe()}") from None
        if not isinstance(value, str):
            raise InvalidRequest(self.name, f"{self.name} must be a string, got {type(value).__name__}")
        choice = value.strip().lower()
        if choice not in self.choices:
            raise InvalidRequest(self.name, f"{self.name}={value[:40]!r} is not supported; accepted: {self.describe()}")
        return choice

    def describe(self) -> str:
        if self.choices:
            return ", ".join(self.choices)
        what = "an integer" if self.kind is int else "a number"
        step = f", multiple of {self.multiple_of}" if self.multiple_of > 1 else ""
        return f"{what} in {_fmt(self.low)}–{_fmt(self.high)}{step}"


def _fmt(bound: float | None) -> str:
    return "…" if bound is None else f"{bound:g}" if isinstance(bound, float) else str(bound)


def _as_number(name: str, value: Any, *, integer: bool):
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(name, f"{name} must be {'an integer' if integer else 'a number'}, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidRequest(name, f"{name}={value} is not a finite number")
    if integer:
        if value != int(value):
            raise InvalidRequest(name, f"{name}={value} must be an integer")
        return int(value)
    return float(value)


PARAMETERS: dict[str, Parameter] = {p.name: p for p in (
    Parameter("width", int, 64, MAX_SIDE, multiple_of=8, help="Width of the video in pixels."),
    Parameter("height", int, 64, MAX_SIDE, multiple_of=8, help="Height of the video in pixels."),
    Parameter("resize_mode", str, choices=images.RESIZE_MODES,
              help="How the image is fitted to width×height: crop to fill, pad with borders, stretch, "
                   "or keep the image's own size."),
    Parameter("num_frames", int, 2, None,  # up to the deployment's max_num_frames
              help="Frames generated per clip."),
    Parameter("num_inference_steps", int, 1, 100,
              help="Denoising steps: more is slower and usually sharper."),
    Parameter("fps", int, 1, 60, help="Frames per second of the video; the model is also conditioned on it."),
    Parameter("motion_bucket_id", int, 0, 255, help="How much motion: higher values move more."),
    Parameter("noise_aug_strength", float, 0.0, 1.0,
              help="Noise added to the image: more lets the video drift further from it."),
    Parameter("min_guidance_scale", float, 0.0, 20.0, help="Guidance at the first frame."),
    Parameter("max_guidance_scale", float, 0.0, 20.0,
              help="Guidance at the last frame (guidance rises linearly across the frames)."),
    Parameter("decode_chunk_size", int, 1, None,  # up to the request's num_frames
              help="Frames decoded at once: fewer needs less memory; it changes the result slightly."),
    Parameter("seed", int, 0, MAX_SEED, help="The same seed and settings give the same video; empty for a random one."),
    Parameter("video_format", str, choices=tuple(VIDEO_FORMATS), help="Container and codec of the result."),
    Parameter("video_quality", int, None, None,
              help="Encoder quality; its range depends on the format (for MP4 the CRF: lower is better)."),
    Parameter("segments", int, 1, None,  # up to the deployment's max_segments
              help="Clips chained one after another, each from the last frame of the one before."),
    Parameter("interpolate", int, 1, 4, help="Frame-rate multiplier by motion-compensated interpolation (1: none)."),
    Parameter("loop", str, choices=LOOPS,
              help="Make the video loop: none, play forward then back (pingpong), or blend the end into the start."),
)}

FIXED_DEFAULTS = {
    "resize_mode": "crop",
    "motion_bucket_id": 127,
    "noise_aug_strength": 0.02,
    "min_guidance_scale": 1.0,
    "max_guidance_scale": 3.0,
    "segments": 1,
    "interpolate": 1,
    "loop": "none",
}


@dataclass(frozen=True)
class GenerationRequest:
    """A fully validated request; `image` is RGB at exactly width×height."""

    image: Image.Image = field(repr=False)
    width: int
    height: int
    resize_mode: str
    num_frames: int
    num_inference_steps: int
    fps: int
    motion_bucket_id: int
    noise_aug_strength: float
    min_guidance_scale: float
    max_guidance_scale: float
    decode_chunk_size: int
    seed: int
    video_format: str
    video_quality: int | None
    segments: int
    """Clips generated one after another, each from the last frame of the one before."""
    interpolate: int
    """Frame-rate multiplier of motion-compensated interpolation (1: none)."""
    loop: str
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

    def batch_key(self) -> tuple:
        """Requests with equal keys can run as one pipeline call: shapes, schedule and guidance agree."""
        return (self.width, self.height, self.num_frames, self.num_inference_steps, self.decode_chunk_size,
                self.min_guidance_scale, self.max_guidance_scale)


def parse_request(image: Any, params: Mapping[str, Any], config: EngineConfig, *, model_num_frames: int) -> GenerationRequest:
    """Validate `params` (None values mean 'use the default') and prepare `image` for generation.

    Three stages, in this order: each field alone (type, static range); then everything that can
    change what the request costs is resolved (defaults, the image, the size `keep` takes from it);
    then `check_limits` runs once on the final request. No request reaches the engine without it.
    """
    started = time.perf_counter()
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown parameter {unknown[0]!r}; accepted: {', '.join(PARAMETERS)}")
    params = {name: value for name, value in params.items() if value is not None}
    num_frames = PARAMETERS["num_frames"].coerce(params.get("num_frames", config.default_num_frames or model_num_frames),
                                                 high=config.max_num_frames)
    bounds = {"num_frames": config.max_num_frames, "decode_chunk_size": num_frames, "segments": config.max_segments}
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
        **given,
    }
    if values["resize_mode"] == "keep":
        clash = sorted({"width", "height"} & set(given))
        if clash:
            raise InvalidRequest(clash[0], "resize_mode=keep takes the size from the image; leave width and height unset")
    picture = images.load_image(image, max_bytes=config.max_image_bytes, max_pixels=config.max_image_pixels)
    if values["resize_mode"] == "keep":
        values["width"], values["height"] = images.keep_size(picture, max_pixels=config.max_pixels, max_side=MAX_SIDE)
    request = GenerationRequest(image=picture, **values)
    check_limits(request, config)
    resized = images.resize(picture, request.width, request.height, request.resize_mode)
    return replace(request, image=resized, prep_seconds=time.perf_counter() - started)


def check_limits(request: GenerationRequest, config: EngineConfig) -> None:
    """Every limit that depends on the deployment or on several fields, checked on the final request."""
    size = f"width×height={request.width}×{request.height}" + (" (resize_mode=keep: the image's size)"
                                                                if request.resize_mode == "keep" else "")
    if request.num_frames > config.max_num_frames:
        PARAMETERS["num_frames"].coerce(request.num_frames, high=config.max_num_frames)
    if request.segments > config.max_segments:
        PARAMETERS["segments"].coerce(request.segments, high=config.max_segments)
    if request.decode_chunk_size > request.num_frames:
        PARAMETERS["decode_chunk_size"].coerce(request.decode_chunk_size, high=request.num_frames)
    if request.min_guidance_scale > request.max_guidance_scale:
        raise InvalidRequest("min_guidance_scale", f"min_guidance_scale={request.min_guidance_scale:g} is greater than max_guidance_scale={request.max_guidance_scale:g}")
    pixels = request.width * request.height
    if pixels > config.max_pixels:
        raise InvalidRequest("width", f"{size} = {pixels} pixels is over this deployment's max_pixels limit of {config.max_pixels}")
    work = pixels * request.num_frames * request.num_inference_steps * request.segments
    if work > config.max_work:
        field_name = "segments" if request.segments > 1 else "num_frames"
        raise InvalidRequest(field_name, f"width×height×num_frames×num_inference_steps×segments = {request.width}×{request.height}×"
                             f"{request.num_frames}×{request.num_inference_steps}×{request.segments} = {work} is over this "
                             f"deployment's max_work budget of {config.max_work}; ask for fewer segments, frames, steps or pixels"
                             + (" (resize_mode=keep took the size from the image)" if request.resize_mode == "keep" else ""))
    before_loop = interpolated_frame_count(joined_frame_count(request.num_frames, request.segments), request.interpolate)
    if request.loop == "crossfade" and before_loop < MIN_CROSSFADE_FRAMES:
        raise InvalidRequest("loop", f"loop=crossfade needs at least {MIN_CROSSFADE_FRAMES} frames to blend; "
                             "ask for more frames, segments or interpolation")
    if request.output_frames > config.max_output_frames:
        culprit = "interpolate" if request.interpolate > 1 else "loop" if request.loop != "none" else "segments"
        raise InvalidRequest(culprit, f"the video would have {request.output_frames} frames (num_frames={request.num_frames}, "
                             f"segments={request.segments}, interpolate={request.interpolate}, loop={request.loop}), over "
                             f"this deployment's max_output_frames limit of {config.max_output_frames}")
    if request.video_quality is not None:
        VIDEO_FORMATS[request.video_format].check_quality(request.video_quality)
