"""Readiness of the gateway itself (/readyz), of the Triton model behind it (/healthz), and the gateway's own
metrics.

A gateway is ready while it can take and answer requests: its store answers. Triton's state is not part of it:
while Triton restarts, jobs wait in the queue and clients keep polling them, which a failing readiness probe would
turn into connection errors at the load balancer."""

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from ..deps import Operator, State, SVDDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    triton_ready: bool


@router.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "Triton is not ready"}})
async def health(svd: SVDDep):
    ready = await svd.ready()
    return JSONResponse({"triton_ready": ready}, status_code=200 if ready else 503)


class Readiness(BaseModel):
    ready: bool
    """The gateway can take and answer requests (its store answers)."""
    triton_ready: bool
    """The model is ready behind it; while not, jobs wait queued."""


@router.get(
    "/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "The store is down"}}
)
async def readiness(state: State, svd: SVDDep):
    try:
        await run_in_threadpool(state.store.ping)
        ready = True
    except SQLAlchemyError:
        ready = False
    return JSONResponse({"ready": ready, "triton_ready": await svd.ready()}, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(state: State, operator: Operator) -> Response:
    """The gateway's Prometheus metrics (svd_gateway/metrics.py), for a key with the admin scope (Prometheus sends
    it: `authorization.credentials_file`); a plain def: the scrape queries the store."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
