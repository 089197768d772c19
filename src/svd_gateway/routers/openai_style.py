"""The OpenAI-style video generations route (VoltageGPU's sample). Each request is a job in the same
durable store as predictions (service.DataPlane.generate); the client waits on the line for its result."""
from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import APIRouter

from ..deps import BaseURL, DataPlaneDep
from ..errors import GENERATION, GUARDED, HouseError, error_responses
from ..jobs import output_url
from ..schemas import VideoGenerationRequest

router = APIRouter(tags=["OpenAI-style"], responses=error_responses(HouseError, 400, *GUARDED, *GENERATION))


@router.post("/v1/video/generations")
async def video_generations(body: VideoGenerationRequest, plane: DataPlaneDep, base: BaseURL):
    job, video, warnings = await plane.generate("openai", body, {}, base)
    entry: dict[str, Any] = {"revised_prompt": None}
    if body.response_format in (None, "url"):
        entry["url"] = output_url(job)
    if body.response_format in (None, "b64_json"):
        entry["b64_json"] = base64.b64encode(video).decode()
    return {"created": int(time.time()), "data": [entry], "warnings": warnings}
