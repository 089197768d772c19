"""OpenAI's Videos API request bodies: its own fields, the model's parameters as extra body fields."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from svd_contract import PARAMETERS

from ...schemas import CACHE_CONFLICTS, ImageOrURL, SVDParameters, _given, whole


class ImageReference(BaseModel):
    """OpenAI's `input_reference` object: an image URL or data URI, or a /v1/files id."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"anyOf": [_given("image_url"), _given("file_id")]}
    )
    image_url: ImageOrURL | None = Field(
        None,
        description="A data:image/...;base64, URI (or base64), a /v1/files URL "
        "of this gateway, or a URL on a host the gateway's allow-list permits.",
    )
    file_id: str | None = Field(None, pattern=r"^[a-z0-9]{1,32}$", description="An id from POST /v1/files.")


class VideoReference(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = Field(description="A completed video of this gateway.")


SECONDS_PER_CLIP = 4
"""Each 4 seconds asked is one chained clip (SVD-XT's 25 frames last 4.2 s at 6 fps, 3.6 s at 7)."""
SECONDS_TEXT = r"^([48]|[2468][048]|[13579][26]|[1-9][0-9]{0,6}([02468][048]|[13579][26]))$"
"""`seconds` as the SDK sends it: a multiple of 4 in decimal, no sign, no leading zero, at most 9 digits."""
MAX_SECONDS = 999_999_996
Seconds = Annotated[
    str | Annotated[int, *whole()] | None,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": SECONDS_TEXT},
                {
                    "type": "integer",
                    "minimum": SECONDS_PER_CLIP,
                    "maximum": MAX_SECONDS,
                    "multipleOf": SECONDS_PER_CLIP,
                },
                {"type": "null"},
            ]
        }
    ),
    Field(
        description="Multiples of 4: each 4 seconds asked is one chained clip (`segments`), "
        "up to the deployment's max_segments."
    ),
]
"""Checked by router.clips, which names the values allowed; the document states the same."""
_SIDE = PARAMETERS["width"]
assert _SIDE.low is not None and _SIDE.high is not None, "the contract's width has a static range"
SIDE_TEXT = "(" + "|".join(str(v) for v in range(int(_SIDE.low), int(_SIDE.high) + 1, _SIDE.multiple_of)) + ")"
SIZE_TEXT = f"^{SIDE_TEXT}x{SIDE_TEXT}$"
"""`size`: WIDTHxHEIGHT, each side one the contract allows (the deployment's max_pixels may refuse more)."""
Size = Annotated[
    str | None,
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": SIZE_TEXT}, {"type": "null"}]}),
    Field(
        description="WIDTHxHEIGHT, e.g. 1024x576 (SVD's own) or 576x1024; sides multiples of "
        f"{_SIDE.multiple_of} in {_SIDE.low}–{_SIDE.high}, within the deployment's "
        "max_pixels."
    ),
]
"""Checked by router.dimensions, which names the sizes allowed; the document states the same."""


class VideoCreateRequest(SVDParameters):
    """POST /v1/videos: OpenAI's fields, and any of the model's parameters (the SDK's `extra_body`)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={  # no setting under both names
            "not": {
                "anyOf": [
                    _given("seconds", "segments"),
                    _given("size", "width"),
                    _given("size", "height"),
                    *CACHE_CONFLICTS,
                ]
            }
        },
    )

    prompt: str = Field(max_length=4000, description="Recorded with an image; without one, text-to-video from it.")
    negative_prompt: str | None = Field(
        None, max_length=4000, description="Text-to-video: what the first frame should not show."
    )
    input_reference: ImageReference | None = Field(
        None, description="The first frame (or a file part of that name in multipart); without it, text-to-video."
    )
    model: str | None = Field(None, max_length=200, description="Recorded and echoed; this gateway serves one model.")
    seconds: Seconds = None
    size: Size = None
    video_format: Literal["mp4"] | None = Field(None, description="This API serves MP4.")


class VideoExtendRequest(BaseModel):
    """POST /v1/videos/extensions: the same request as the original with more clips chained after it. `video`
    is optional here because multipart sends it as a file part; the documented schemas require it."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra=lambda schema: schema.update(
            required=["prompt", "seconds", "video"],
            properties={
                **schema["properties"],
                "video": {
                    **schema["properties"]["video"]["anyOf"][0],
                    "description": schema["properties"]["video"]["description"],
                },
            },
        ),
    )
    prompt: str = Field(max_length=4000)
    seconds: Seconds
    video: VideoReference | None = Field(
        None,
        description="{id}, or a file part of that name in multipart: the "
        "bytes of a video this gateway made (as downloaded).",
    )


class VideoRemixRequest(SVDParameters):
    """POST /v1/videos/{id}/remix: the original's input and settings with a new prompt (and a new seed unless
    one is given)."""

    prompt: str = Field(max_length=4000)
