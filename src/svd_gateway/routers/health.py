"""Liveness of the gateway and readiness of the Triton model behind it."""
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ..deps import SVDDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    triton_ready: bool


@router.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "Triton is not ready"}})
async def health(svd: SVDDep):
    ready = await svd.ready()
    return JSONResponse({"triton_ready": ready}, status_code=200 if ready else 503)
