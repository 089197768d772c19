"""Replicate's request bodies: cog-svd's input names (replicate.com/stability-ai/stable-video-diffusion) or the
model's own, and their translation into the model's parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from svd_contract import PARAMETERS

from ...errors import GatewayError
from ...schemas import (
    CACHE_CONFLICTS,
    IGNORED_FIELDS,
    PROMPT_FIELDS,
    ImageOrURL,
    SVDParameters,
    WebhookURL,
    _given,
    contract_range,
    whole,
)
from ...webhooks import Event

# cog-svd (replicate.com/stability-ai/stable-video-diffusion) input names → ours.
VideoLength = Literal["14_frames_with_svd", "25_frames_with_svd_xt"]
VIDEO_LENGTHS: dict[VideoLength, int] = {"14_frames_with_svd": 14, "25_frames_with_svd_xt": 25}
SizingStrategy = Literal["maintain_aspect_ratio", "crop_to_16_9", "use_image_dimensions"]
SIZING_STRATEGIES: dict[SizingStrategy, str] = {
    "maintain_aspect_ratio": "crop",
    "crop_to_16_9": "crop",
    "use_image_dimensions": "keep",
}
COG_NAMES = {
    "input_image": "image",
    "video_length": "num_frames",
    "sizing_strategy": "resize_mode",
    "frames_per_second": "fps",
    "cond_aug": "noise_aug_strength",
    "decoding_t": "decode_chunk_size",
}
# What cog-svd does when a field is left out and our own name is not given either.
COG_DEFAULTS = {"num_frames": 14, "fps": 6}


class PredictionInput(SVDParameters):
    """A prediction's input: cog-svd's names (input_image, video_length, ...) or the model's own. Without an
    image, a prompt runs text-to-video; with one, a prompt is ignored (and said so in the logs)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={  # an image or a prompt; no setting under both names
            "anyOf": [_given("input_image"), _given("image"), _given("prompt")],
            "not": {
                "anyOf": [
                    _given("input_image", "image"),
                    *(_given(cog, ours) for cog, ours in COG_NAMES.items() if ours in PARAMETERS),
                    *CACHE_CONFLICTS,
                ]
            },
        },
    )
    input_image: ImageOrURL | None = Field(
        None,
        description="The image: an uploaded file's URL, a data URI, base64, "
        "or a URL on a host the gateway's allow-list permits.",
    )
    image: ImageOrURL | None = Field(None, description="Same as input_image.")
    prompt: str | None = Field(
        None,
        description="Without an image: the text the first frame is made from (text-to-video). With an image: ignored.",
    )
    negative_prompt: str | None = Field(None, description="Text-to-video: what the first frame should not show.")
    video_length: VideoLength | None = None
    sizing_strategy: SizingStrategy | None = None
    frames_per_second: Annotated[int, *whole(ge=5, le=30)] | None = None
    cond_aug: Annotated[float, *contract_range("noise_aug_strength", float)] | None = None
    decoding_t: Annotated[int, *contract_range("decode_chunk_size", int)] | None = None


def prediction_parameters(given: PredictionInput) -> tuple[str | None, dict[str, Any], list[str]]:
    """The image reference (None: text-to-video), the model's parameters and notes on ignored fields of a
    prediction input; both names of one field → error."""
    values = given.model_dump(exclude_none=True)
    params: dict[str, Any] = {}
    translations: dict[str, Mapping[Any, Any]] = {"video_length": VIDEO_LENGTHS, "sizing_strategy": SIZING_STRATEGIES}
    for name, value in values.items():
        target = COG_NAMES.get(name, name)
        if target in params:
            raise GatewayError(
                422,
                "invalid_input",
                f"input.{name} and input.{target} name the same setting; give one",
                f"input.{name}",
            )
        params[target] = translations.get(name, {}).get(value, value)
    image = params.pop("image", None)
    notes = []
    if image is None and "prompt" not in params:
        raise GatewayError(
            422,
            "invalid_input",
            "input.input_image: required (an image URL from /v1/files, a data URI "
            "or base64), or a prompt alone for text-to-video",
            "input.input_image",
        )
    if image is not None:
        notes = [
            f"input.{name}: {IGNORED_FIELDS[name]}" for name in PROMPT_FIELDS if params.pop(name, None) is not None
        ]
    if "input_image" in values:  # a cog-svd request: cog-svd's defaults where it gave nothing
        params = {**COG_DEFAULTS, **params}
    return image, params, notes


class PredictionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: str | None = None
    """Any version id: this gateway serves one model version."""
    input: PredictionInput
    webhook: WebhookURL | None = Field(None, description="An http(s) URL, on the gateway's allow-list")
    webhook_completed: WebhookURL | None = None
    """Older clients' name for a webhook called only on completion."""
    webhook_events_filter: list[Event] | None = None
    stream: bool | None = None
    """Accepted for compatibility; progress is in `logs`, no SSE stream is offered."""
