"""Liveness of the gateway and readiness of the Triton model behind it."""
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..deps import SVDDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def health(svd: SVDDep):
    ready = await svd.ready()
    return JSONResponse({"triton_ready": ready}, status_code=200 if ready else 503)
