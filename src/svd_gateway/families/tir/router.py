"""E2E TIR's synchronous predict routes: a base64 image in, the video (AVI unless asked otherwise) in base64 out.
Each request is a job in the same durable store as the others; the client waits on the line for its result."""

from __future__ import annotations

import base64

from fastapi import Path

from ...accounts import Principal
from ...catalogue import ImageBody, catalogue_spec
from ...deps import BaseURL, Caller, DataPlaneDep
from ...errors import GENERATION, GUARDED, HouseError, error_responses, family_router
from ...service import DataPlane

router = family_router(tags=["E2E TIR"])
named = family_router(tags=["E2E TIR"], invalid_status=422)
"""The KServe-style named route answers an invalid body 422 (as the gateway always has), /predict 400."""
DEFAULTS = {"video_format": "avi"}
"""TIR's samples save the answer as an .avi file."""


class PredictRequest(ImageBody):
    """E2E TIR pre-built endpoint: a base64 image and optional SVD parameters."""


async def predictions(body: PredictRequest, plane: DataPlane, base: str, caller: Principal) -> dict:
    spec, _ = await catalogue_spec("tir", body, plane, caller, defaults=DEFAULTS)
    _, video = await plane.run(spec, base, caller)
    return {"predictions": base64.b64encode(video).decode()}


@named.post(
    "/v1/models/{model}:predict",
    summary="Predict (a named model)",
    responses=error_responses(HouseError, 400, *GUARDED, 422, *GENERATION),
)
async def predict_model(
    body: PredictRequest,
    plane: DataPlaneDep,
    base: BaseURL,
    caller: Caller,
    model: str = Path(description="The endpoint's model name; this gateway serves one model."),
):
    return await predictions(body, plane, base, caller)


@router.post("/predict", summary="Predict", responses=error_responses(HouseError, 400, *GUARDED, *GENERATION))
async def predict(body: PredictRequest, plane: DataPlaneDep, base: BaseURL, caller: Caller):
    return await predictions(body, plane, base, caller)
