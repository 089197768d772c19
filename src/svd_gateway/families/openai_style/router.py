"""The OpenAI-style video generations route (VoltageGPU's sample): an image or a prompt in, a URL into the
gateway's store and/or the video in base64 out. Each request is a job in the same durable store as the others;
the client waits on the line for its result."""

from __future__ import annotations

import base64
import time
from typing import Any, Literal

from ...catalogue import CatalogueBody, catalogue_spec
from ...deps import BaseURL, Caller, DataPlaneDep, SettingsDep
from ...errors import GENERATION, GUARDED, HouseError, error_responses, family_router
from ...jobs import output_url

router = family_router(tags=["OpenAI-style"], responses=error_responses(HouseError, 400, *GUARDED, *GENERATION))


class VideoGenerationRequest(CatalogueBody):
    """OpenAI-style video generations."""

    response_format: Literal["url", "b64_json"] | None = None
    """`url`, `b64_json`, or unset for both."""


@router.post("/v1/video/generations")
async def video_generations(
    body: VideoGenerationRequest, plane: DataPlaneDep, base: BaseURL, settings: SettingsDep, caller: Caller
):
    spec, warnings = await catalogue_spec("openai", body, plane, caller, own={"response_format"})
    job, video = await plane.run(spec, base, caller)
    entry: dict[str, Any] = {"revised_prompt": None}
    if body.response_format in (None, "url"):
        entry["url"] = output_url(job, settings.link_seconds)
    if body.response_format in (None, "b64_json"):
        entry["b64_json"] = base64.b64encode(video).decode()
    return {"created": int(time.time()), "data": [entry], "warnings": warnings}
