"""Request parameters: names, types, static ranges, choices, fixed defaults and one line of help each.

The one table every layer reads: the engine validates with it, the Triton models declare their inputs
from it (upper case: num_frames → NUM_FRAMES), and the CLI flags, gateway schemas, playground controls
and tests are built from it. A bound of None depends on the deployment (max_num_frames) or on other
fields (decode_chunk_size ≤ num_frames, video_quality per format). A default of None is the
deployment's (config.pbtxt's default_*) or chosen per request (seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from .errors import InvalidRequest
from .formats import VIDEO_FORMATS

MAX_SEED = 2**63 - 1
MAX_SIDE = 2048
RESIZE_MODES = ("crop", "pad", "stretch", "keep")
LOOPS = ("none", "pingpong", "crossfade")
SCHEDULES = ("karras", "ays")
PRESETS: dict[str, dict[str, Any]] = {
    "quality": {},
    "balanced": {"schedule": "ays", "num_inference_steps": 15, "conditional_final_steps": 3},
    "fast": {"schedule": "ays", "num_inference_steps": 10, "conditional_final_steps": 4},
}
"""Speed presets: what each sets where the request leaves a field unset (a field given explicitly wins; a preset's
conditional_final_steps is capped at the request's steps). `quality` is the deployment's own defaults. Counted UNet
work against stock diffusers' 25 guided steps (50 batch-1 UNet passes): balanced 27 passes (1.9× fewer), fast 16
(3.1× fewer); fast with cache_interval 3 about 10 (4.9× fewer); see docs/benchmarks.md, the work table."""
"""Noise schedules: the scheduler's own Karras sigmas, or NVIDIA's Align Your Steps sigmas for SVD."""
MAX_CONDITIONAL_FINAL_STEPS = 100
"""num_inference_steps' own bound; a request's count is further bounded by its num_inference_steps."""
MAX_CACHE_INTERVAL = 10
"""Published set-ups use 2 to 5 (OneDiff's SVD example uses 3); up to 10 leaves room to measure further."""
MAX_CACHE_BRANCH_ID = 3
"""SVD's and SVD-XT's UNets have four down blocks (0–3); a model with fewer blocks lowers this bound."""


@dataclass(frozen=True)
class Parameter:
    """One request field: its type and static range (None where the range depends on the deployment)."""

    name: str
    kind: type
    """int, float or str (a choice among `choices`)."""
    low: int | float | None = None
    high: int | float | None = None
    choices: tuple[str, ...] = ()
    multiple_of: int = 1
    default: str | int | float | None = None
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
            raise InvalidRequest(
                self.name,
                f"{self.name}={number} must be a multiple of {self.multiple_of}; accepted: {bounded.describe()}",
            )
        return number

    def _coerce_choice(self, value: Any) -> str:
        if isinstance(value, bytes):  # numpy's bytes_ too
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(
                    self.name, f"{self.name} is not valid UTF-8; accepted: {self.describe()}"
                ) from None
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
    """`value` as an int or float; numpy scalars and one-element arrays are unwrapped by their `item()`."""
    if (
        not isinstance(value, (int, float))
        and callable(getattr(value, "item", None))
        and getattr(value, "size", 1) == 1
    ):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(
            name, f"{name} must be {'an integer' if integer else 'a number'}, got {type(value).__name__}"
        )
    if not math.isfinite(value):
        raise InvalidRequest(name, f"{name}={value} is not a finite number")
    if integer:
        if value != int(value):
            raise InvalidRequest(name, f"{name}={value} must be an integer")
        return int(value)
    return float(value)


def table(*parameters: Parameter) -> dict[str, Parameter]:
    return {p.name: p for p in parameters}


PARAMETERS: dict[str, Parameter] = table(
    Parameter("width", int, 64, MAX_SIDE, multiple_of=8, help="Width of the video in pixels."),
    Parameter("height", int, 64, MAX_SIDE, multiple_of=8, help="Height of the video in pixels."),
    Parameter(
        "resize_mode",
        str,
        choices=RESIZE_MODES,
        default="crop",
        help="How the image is fitted to width×height: crop to fill, pad with borders, stretch, "
        "or keep the image's own size.",
    ),
    Parameter(
        "num_frames",
        int,
        2,
        None,  # up to the deployment's max_num_frames
        help="Frames generated per clip.",
    ),
    Parameter("num_inference_steps", int, 1, 100, help="Denoising steps: more is slower and usually sharper."),
    Parameter(
        "preset",
        str,
        choices=tuple(PRESETS),
        default="quality",
        help="Speed preset: quality (the deployment's defaults), balanced (ays, 15 steps, the last 3 "
        "conditional-only) or fast (ays, 10 steps, the last 4 conditional-only); fields given explicitly win.",
    ),
    Parameter(
        "schedule",
        str,
        choices=SCHEDULES,
        default="karras",
        help="Noise levels of the denoising steps: karras (the model's own) or ays (Align Your Steps: "
        "the levels NVIDIA optimised for SVD at 10 steps, interpolated for other step counts).",
    ),
    Parameter("fps", int, 1, 60, help="Frames per second of the video; the model is also conditioned on it."),
    Parameter("motion_bucket_id", int, 0, 255, default=127, help="How much motion: higher values move more."),
    Parameter(
        "noise_aug_strength",
        float,
        0.0,
        1.0,
        default=0.02,
        help="Noise added to the image: more lets the video drift further from it.",
    ),
    Parameter("min_guidance_scale", float, 0.0, 20.0, default=1.0, help="Guidance at the first frame."),
    Parameter(
        "max_guidance_scale",
        float,
        0.0,
        20.0,
        default=3.0,
        help="Guidance at the last frame (guidance rises linearly across the frames).",
    ),
    Parameter(
        "conditional_final_steps",
        int,
        0,
        MAX_CONDITIONAL_FINAL_STEPS,  # and at most the request's num_inference_steps
        default=0,
        help="The last k denoising steps use the conditional prediction alone, skipping guidance's "
        "unconditional UNet pass (each such step costs about half a guided one); 0 guides every step. "
        "Guidance matters least at low noise (guidance interval, adaptive guidance); no effect without "
        "guidance (max_guidance_scale ≤ 1).",
    ),
    Parameter(
        "decode_chunk_size",
        int,
        1,
        None,  # up to the request's num_frames
        help="Frames decoded at once: fewer needs less memory; it changes the result slightly.",
    ),
    Parameter("seed", int, 0, MAX_SEED, help="The same seed and settings give the same video; empty for a random one."),
    Parameter("video_format", str, choices=tuple(VIDEO_FORMATS), help="Container and codec of the result."),
    Parameter(
        "video_quality",
        int,
        None,
        None,
        help="Encoder quality; its range depends on the format (for MP4 the CRF: lower is better).",
    ),
    Parameter(
        "segments",
        int,
        1,
        None,
        default=1,  # up to the deployment's max_segments
        help="Clips chained one after another, each from the last frame of the one before.",
    ),
    Parameter(
        "interpolate", int, 1, 4, default=1, help="Frame-rate multiplier by motion-compensated interpolation (1: none)."
    ),
    Parameter(
        "loop",
        str,
        choices=LOOPS,
        default="none",
        help="Make the video loop: none, play forward then back (pingpong), or blend the end into the start.",
    ),
    Parameter(
        "cache_interval",
        int,
        1,
        MAX_CACHE_INTERVAL,
        default=1,
        help="Feature caching (DeepCache): the whole UNet runs every k-th denoising step and only its "
        "shallow branch in between; 1 is off, higher is faster and strays further from the uncached video.",
    ),
    Parameter(
        "cache_branch_id",
        int,
        0,
        MAX_CACHE_BRANCH_ID,
        default=0,  # up to the model's down blocks − 1
        help="Which UNet skip branch the cached steps recompute, 0 the shallowest (fastest); "
        "deeper branches cost more and stay closer to the uncached video.",
    ),
)
"""The image-to-video request (svd_xt) besides its image."""
FIXED_DEFAULTS = {name: p.default for name, p in PARAMETERS.items() if p.default is not None}

PROMPTS = {
    "prompt": "What the first frame shows (text-to-image, then animated).",
    "negative_prompt": "What the first frame should not show.",
}
"""Free-text fields of text_to_image and text_to_video: `prompt` is required there."""

TEXT_IMAGE_PARAMETERS: dict[str, Parameter] = table(
    PARAMETERS["width"],
    PARAMETERS["height"],
    Parameter(
        "num_inference_steps",
        int,
        1,
        None,  # up to the deployment's max_num_inference_steps
        help="Denoising steps of the first frame.",
    ),
    Parameter("guidance_scale", float, 0.0, 20.0, help="Classifier-free guidance of the first frame (0: none)."),
    PARAMETERS["seed"],
)
"""The text-to-image request (text_to_image) besides its prompts."""

TEXT_TO_VIDEO_IMAGE_PARAMETERS = {
    "image_" + name: replace(TEXT_IMAGE_PARAMETERS[name], name="image_" + name)
    for name in ("num_inference_steps", "guidance_scale")
}
"""text_to_video's own knobs for its first stage: image_X is text_to_image's X."""
