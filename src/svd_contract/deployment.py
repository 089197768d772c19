"""A deployment's request defaults and limits: svd_xt's config.pbtxt `parameters`, one reader for both ends.

Triton hands the parameters over as strings (to the model at load, to clients in the model's
configuration; `config_parameters` takes them out as {name: string_value}); `read_parameters` converts
them by the dataclass fields' types, naming the parameter that does not convert. The engine's settings
(svd_engine.config.EngineConfig) extend `Deployment` with what only the engine reads (weights, device,
fast path) and use the same reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, get_type_hints

from .errors import InvalidRequest
from .parameters import MAX_CACHE_INTERVAL, PARAMETERS

BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
CONVERTERS = {bool: lambda text: BOOLEANS[text.lower()]}
"""Parsers for config.pbtxt strings, by field type; any other type parses with its own constructor."""
CHECKED_DEFAULTS = ("width", "height", "num_inference_steps", "fps", "decode_chunk_size", "video_format")
"""Parameters whose `default_<name>` must be a value a request may send (and default_num_frames unless 0)."""


def config_parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """A model configuration's `parameters` as {name: string_value}, from the JSON shape Triton serves
    (GET /v2/models/NAME/config) and hands to the model at load."""
    return {name: value["string_value"] for name, value in model_config.get("parameters", {}).items()}


def read_parameters(cls, parameters: Mapping[str, str]) -> dict[str, Any]:
    """The `parameters` that name a field of the dataclass `cls`, each converted to the field's type;
    ValueError naming the first one that does not convert. Other names are left out."""
    types = get_type_hints(cls)
    names = {field.name for field in fields(cls)}
    values = {}
    for name, raw in parameters.items():
        if name in names:
            kind = types[name]
            try:
                values[name] = CONVERTERS.get(kind, kind)(str(raw).strip())
            except (KeyError, ValueError):
                raise ValueError(f"parameter {name}={raw!r} is not a valid {kind.__name__}") from None
    return values


@dataclass(frozen=True)
class Deployment:
    """What svd_xt's deployment sets for requests: the defaults of what a request leaves out, and what one
    request may ask for. A parameter config.pbtxt leaves out has the default below, as in the engine."""

    default_width: int = 1024
    default_height: int = 576
    """The size of a request that sends none (SVD-XT's native 1024×576)."""
    default_num_frames: int = 0
    """0 means the model's own frame count (25 for SVD-XT, 14 for SVD)."""
    default_num_inference_steps: int = 25
    default_decode_chunk_size: int = 8
    """Frames the VAE decodes at once: more is faster and needs more memory."""
    default_fps: int = 7
    """Playback rate of the delivered video, and the fps conditioning SVD receives."""
    default_video_format: str = "mp4"
    max_pixels: int = 1024 * 1024
    """Upper bound on width × height of what one request generates."""
    max_num_frames: int = 25
    """Most frames one segment may denoise (SVD-XT was trained on 25)."""
    max_work: int = 1024 * 576 * 25 * 50
    """Upper bound on width × height × num_frames × num_inference_steps: what one request may cost.
    Activation memory grows with pixels × frames, time with all four; the default admits SVD-XT's own
    defaults with twice the steps."""
    max_segments: int = 4
    """Most clips one request may chain (`segments`); max_work counts every segment."""
    max_output_frames: int = 400
    """Most frames in a delivered video after segments, interpolation and looping: bounds the cost of
    interpolating and encoding and the size of FRAMES."""
    max_cache_interval: int = MAX_CACHE_INTERVAL
    """Largest `cache_interval` (feature caching) a request may ask for. 1 turns feature caching off for
    this deployment, and a compiled fast path then compiles only the whole UNet at load, not its blocks."""
    max_image_bytes: int = 20 * 1024 * 1024
    """Largest encoded input image accepted, checked before decoding."""
    max_image_pixels: int = 40_000_000
    """Largest decoded input image (width × height), checked from the header before decoding."""

    def __post_init__(self):
        """Refuse, naming the parameter, a deployment that would fail every request left to its defaults."""
        for field in fields(Deployment):
            if field.name.startswith("max_") and getattr(self, field.name) < 1:
                raise ValueError(f"{field.name}={getattr(self, field.name)} must be at least 1")
        if not 1 <= self.max_cache_interval <= MAX_CACHE_INTERVAL:
            raise ValueError(f"max_cache_interval={self.max_cache_interval} must be 1–{MAX_CACHE_INTERVAL}")
        defaults = {name: getattr(self, "default_" + name) for name in CHECKED_DEFAULTS}
        if self.default_num_frames:  # 0: the model's own
            defaults["num_frames"] = self.default_num_frames
        for name, value in defaults.items():
            parameter = PARAMETERS[name]
            if name == "num_frames":
                parameter = replace(parameter, high=self.max_num_frames)
            try:
                accepted = parameter.coerce(value) == value
            except InvalidRequest:
                accepted = False
            if not accepted:
                raise ValueError(
                    f"default_{name}={value!r} is not a {name} a request may ask for; accepted: "
                    + parameter.describe()
                    + (" or 0 (the model's own)" if name == "num_frames" else "")
                )

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> Deployment:
        """The deployment that config.pbtxt's parameters ({name: string_value}) describe; ValueError naming a
        bad one. Names that are not fields here are skipped: the engine's own settings, keep_warm_seconds."""
        return cls(**read_parameters(cls, parameters))
