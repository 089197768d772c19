"""Stability AI's image-to-video form fields."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ...schemas import SVDParameters, whole


class StabilityRequest(SVDParameters):
    """Stability AI's POST /v2beta/image-to-video form fields (the `image` file beside them), and the model's
    parameters under their own names."""

    seed: Annotated[int, *whole(ge=0, le=4294967294)] = Field(0, description="0: a random seed.")
    cfg_scale: Annotated[
        float,
        Field(
            ge=0,
            le=10,
            allow_inf_nan=False,
            description="How strongly the video sticks to the image: max_guidance_scale.",
        ),
    ] = 1.8
    motion_bucket_id: Annotated[int, *whole(ge=1, le=255)] = Field(127, description="Higher values move more.")
