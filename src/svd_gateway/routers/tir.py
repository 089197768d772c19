"""E2E TIR's synchronous predict routes. Each request is a job in the same durable store as predictions
(service.DataPlane.generate); the client waits on the line for its result."""
from __future__ import annotations

import base64

from fastapi import APIRouter, Path

from ..deps import BaseURL, DataPlaneDep
from ..errors import GENERATION, GUARDED, HouseError, error_responses
from ..schemas import PredictRequest

router = APIRouter(tags=["E2E TIR"])


@router.post("/v1/models/{model}:predict", summary="Predict (a named model)",
             responses=error_responses(HouseError, 400, *GUARDED, 422, *GENERATION))
async def predict_model(body: PredictRequest, plane: DataPlaneDep, base: BaseURL,
                        model: str = Path(description="The endpoint's model name; this gateway serves one model.")):
    _, video, _ = await plane.generate("tir", body, {"video_format": "avi"}, base)
    return {"predictions": base64.b64encode(video).decode()}


@router.post("/predict", summary="Predict", responses=error_responses(HouseError, 400, *GUARDED, *GENERATION))
async def predict(body: PredictRequest, plane: DataPlaneDep, base: BaseURL):
    _, video, _ = await plane.generate("tir", body, {"video_format": "avi"}, base)
    return {"predictions": base64.b64encode(video).decode()}
