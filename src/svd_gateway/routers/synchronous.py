"""The synchronous shapes of hosted SVD endpoints: E2E TIR and OpenAI-style (Nebius Forge's: forge.py). Each
request is a job in the same durable store as predictions (service.DataPlane.generate); the client waits on the
line for its result."""
from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import APIRouter, Path

from ..deps import BaseURL, DataPlaneDep
from ..jobs import output_url
from ..schemas import PredictRequest, VideoGenerationRequest

tir = APIRouter(tags=["E2E TIR"])
openai = APIRouter(tags=["OpenAI-style"])


@tir.post("/v1/models/{model}:predict", summary="Predict (a named model)")
async def predict_model(body: PredictRequest, plane: DataPlaneDep, base: BaseURL,
                        model: str = Path(description="The endpoint's model name; this gateway serves one model.")):
    _, video, _ = await plane.generate("tir", body, {"video_format": "avi"}, base)
    return {"predictions": base64.b64encode(video).decode()}


@tir.post("/predict", summary="Predict")
async def predict(body: PredictRequest, plane: DataPlaneDep, base: BaseURL):
    _, video, _ = await plane.generate("tir", body, {"video_format": "avi"}, base)
    return {"predictions": base64.b64encode(video).decode()}


@openai.post("/v1/video/generations")
async def video_generations(body: VideoGenerationRequest, plane: DataPlaneDep, base: BaseURL):
    job, video, warnings = await plane.generate("openai", body, {}, base)
    entry: dict[str, Any] = {"revised_prompt": None}
    if body.response_format in (None, "url"):
        entry["url"] = output_url(job)
    if body.response_format in (None, "b64_json"):
        entry["b64_json"] = base64.b64encode(video).decode()
    return {"created": int(time.time()), "data": [entry], "warnings": warnings}
