"""The one parameter check every API family's translation ends in, before a job exists.

Families spell the model's parameters their own way (cog-svd's names, OpenAI's `seconds` and `size`,
Stability's `cfg_scale`) and translate them into the contract's names; what is left of other hosted APIs'
vocabulary (the feature-caching switches `deep_cache` and `enable_deepcache`, catalogue bodies'
`guidance_scale`) is resolved here, and every value is then checked against the contract's static range, so
every family accepts and refuses the same parameters the same way, and a job never carries a name Triton
does not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from svd_contract import PARAMETERS, PROMPTS, TEXT_TO_VIDEO_IMAGE_PARAMETERS, InvalidRequest

from .errors import GatewayError
from .store import sha256

DeepCachePreset = Literal["none", "minimum", "medium", "high"]
DEEP_CACHE_PRESETS: dict[DeepCachePreset, int] = {"none": 1, "minimum": 2, "medium": 3, "high": 5}
"""fal's `deep_cache` presets → cache_interval, each at cache_branch_id 0 (the branch that saves the most)."""
DEEPCACHE_INTERVAL = 3
"""cache_interval of Replicate's `enable_deepcache: true` without one: the interval DeepCache's own example uses."""
ALIASES = {"guidance_scale": "max_guidance_scale"}
"""Catalogue bodies' (Forge, VoltageGPU, OpenAI-style) names for a contract parameter."""
ACCEPTED = {**PARAMETERS, **TEXT_TO_VIDEO_IMAGE_PARAMETERS}
"""The model's parameters, and text_to_video's own knobs (a job without an image is text-to-video)."""


@dataclass
class JobSpec:
    """One request as its family translated it, all the data plane needs to make and run a job."""

    origin: str
    """The family's name for its jobs (the store's `origin`): whose routes find the job again."""
    image: bytes
    """The first frame, checked as an image; b"": text-to-video from the prompt in `params`."""
    params: dict[str, Any]
    """The model's parameters in the family's translation; check_parameters makes them the contract's."""
    echo: dict[str, Any] = field(default_factory=dict)
    """What the family echoes back of the request (the job's `input`)."""
    status: int = 400
    """The family's status for a refused parameter (Replicate and fal: 422)."""
    keep_image: bool = False
    """Keep the image as long as the video, for later jobs that start from it (OpenAI's remix and extend)."""
    notes: list[str] = field(default_factory=list)
    """Lines the job's log starts with (fields the model ignored)."""
    model: str | None = None
    version: str | None = None
    webhook: str | None = None
    events: list[str] = field(default_factory=list)


def cache_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with the other APIs' caching switches replaced by the model's cache_interval (their conflicts are
    refused by the request models: schemas.CacheSwitches)."""
    preset, enabled = params.pop("deep_cache", None), params.pop("enable_deepcache", None)
    if preset is not None:
        params["cache_interval"] = DEEP_CACHE_PRESETS[preset]
    elif enabled is not None:
        params["cache_interval"] = params.get("cache_interval", DEEPCACHE_INTERVAL) if enabled else 1
    return params


def check_parameters(params: dict[str, Any], status: int = 400) -> dict[str, Any]:
    """`params` in the contract's names and types, each checked against its static range (the deployment's own
    bounds are the model's to check); an unknown name or a value out of range is `status` naming the field."""
    checked: dict[str, Any] = {}
    for name, value in cache_parameters(dict(params)).items():
        name = ALIASES.get(name, name)
        if name in PROMPTS:
            if not isinstance(value, str):
                raise GatewayError(status, "invalid_request", f"{name} must be a string", name)
            checked[name] = value
            continue
        if name not in ACCEPTED:
            raise GatewayError(
                status,
                "invalid_request",
                f"unknown parameter {name[:40]!r}; accepted: "
                f"{', '.join([*ACCEPTED, *PROMPTS, 'deep_cache', 'enable_deepcache'])}",
                name[:40],
            )
        try:
            checked[name] = ACCEPTED[name].coerce(value)
        except InvalidRequest as error:
            raise GatewayError(status, "invalid_request", error.detail, name) from None
    return checked


def image_digest(image: bytes) -> str:
    """How a job echoes an image it was sent inline (base64, a data URI, a file part): its digest, not the bytes."""
    return f"sha256:{sha256(image)}"


def echoed_image(reference: str, image: bytes) -> str:
    """An image reference as a job echoes it back: a URL as given, inline bytes as their digest."""
    return reference if reference.startswith(("http://", "https://")) else image_digest(image)
