"""Liveness of the gateway, readiness of the Triton model behind it, and the gateway's own metrics."""

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from ..deps import Operator, State, SVDDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    triton_ready: bool


@router.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "Triton is not ready"}})
async def health(svd: SVDDep):
    ready = await svd.ready()
    return JSONResponse({"triton_ready": ready}, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(state: State, operator: Operator) -> Response:
    """The gateway's Prometheus metrics (svd_gateway/metrics.py), for a key with the admin scope (Prometheus sends
    it: `authorization.credentials_file`); a plain def: the scrape queries the store."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
