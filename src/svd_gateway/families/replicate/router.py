"""Replicate's predictions API, as the official `replicate` client uses it (client.run, predictions.*,
models.predictions.create, webhooks.default.secret)."""

from __future__ import annotations

import base64
import binascii
import math
from datetime import datetime

from fastapi import Header, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...accounts import Principal
from ...deps import BaseURL, Caller, DataPlaneDep, SettingsDep, StoreDep, WebhooksDep
from ...errors import GUARDED, GatewayError, HouseError, error_responses, family_router, house_error
from ...jobs import VERSION
from ...service import DataPlane
from ...settings import Settings
from ...spec import JobSpec, echoed_image
from ...store import Job, Store
from .render import as_prediction
from .schemas import PredictionInput, PredictionRequest, prediction_parameters

router = family_router(
    render_error=house_error,
    invalid_status=422,
    tags=["predictions"],
    responses=error_responses(HouseError, 400, *GUARDED, 404, 422),
)
PREDICTION_NOT_FOUND = "no such prediction"


def wait_seconds(prefer: str | None, longest: float) -> float:
    """`Prefer: wait` holds the answer up to `longest` seconds, `Prefer: wait=N` up to N (a finite 0…longest)."""
    for token in (prefer or "").replace(" ", "").split(","):
        if token == "wait":
            return longest
        if token.startswith("wait="):
            try:
                seconds = float(token[5:])
            except ValueError:
                seconds = math.nan
            if not 0 <= seconds <= longest:  # nan compares false: refused with inf and negatives
                raise GatewayError(
                    400,
                    "invalid_request",
                    f"Prefer: wait=N needs a number of seconds from 0 to {longest:g}, not {token[5:40]!r}",
                    "Prefer",
                )
            return seconds
    return 0.0


async def prediction_spec(
    request: PredictionRequest, plane: DataPlane, model: str | None, caller: Principal
) -> JobSpec:
    """A prediction as a job: cog-svd's names translated, an inline image echoed as its digest."""
    image_ref, params, notes = prediction_parameters(request.input)
    # No image: text-to-video from the prompt (the runner sends a job whose params hold a prompt to text_to_video).
    image = b"" if image_ref is None else await plane.image(image_ref, "input.input_image", caller, 422)
    echo = request.input.model_dump(exclude_none=True)
    for name in ("input_image", "image"):
        if name in echo:
            echo[name] = echoed_image(echo[name], image)
    webhook = request.webhook or request.webhook_completed
    events = request.webhook_events_filter or (
        ["completed"] if request.webhook_completed and not request.webhook else []
    )
    return JobSpec(
        "predictions",
        image,
        params,
        echo,
        status=422,
        notes=notes,
        model=model,
        version=request.version or VERSION,
        webhook=webhook,
        events=list(events),
    )


async def _create(
    request: PredictionRequest,
    model: str | None,
    prefer: str | None,
    plane: DataPlane,
    settings: Settings,
    base: str,
    caller: Principal,
) -> JSONResponse:
    seconds = wait_seconds(prefer, settings.max_wait)  # before the job exists: a refused request leaves none
    job = await plane.queue(await prediction_spec(request, plane, model, caller), base, caller)
    if seconds:
        waited = await plane.wait(job.id, seconds)
        assert waited is not None, f"job {job.id} was deleted while its client waited"  # as before: no answer
        job = waited
    return JSONResponse(
        as_prediction(job, settings.link_seconds),
        status_code=201,
        headers={"Preference-Applied": f"wait={seconds:g}"} if seconds else None,
    )


@router.post("/v1/predictions", status_code=201)
async def create_prediction(
    request: PredictionRequest,
    plane: DataPlaneDep,
    settings: SettingsDep,
    base: BaseURL,
    caller: Caller,
    prefer: str | None = Header(None),
):
    return await _create(request, None, prefer, plane, settings, base, caller)


@router.post("/v1/models/{owner}/{name}/predictions", status_code=201)
async def create_model_prediction(
    request: PredictionRequest,
    plane: DataPlaneDep,
    settings: SettingsDep,
    base: BaseURL,
    caller: Caller,
    owner: str = Path(),
    name: str = Path(),
    prefer: str | None = Header(None),
):
    return await _create(request, f"{owner}/{name}", prefer, plane, settings, base, caller)


@router.get("/v1/predictions")
async def list_predictions(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    caller: Caller,
    cursor: str | None = None,
    page_size: int = Query(100, ge=1, le=1000),
):
    position = _decode_cursor(cursor) if cursor else None
    jobs = await run_in_threadpool(store.page, "predictions", caller.owner, position, page_size + 1)
    following = None
    if len(jobs) > page_size:
        jobs = jobs[:page_size]
        following = str(request.url.include_query_params(cursor=_encode_cursor(jobs[-1].created_at, jobs[-1].id)))
    return {
        "previous": None,
        "next": following,
        "results": [as_prediction(job, settings.link_seconds) for job in jobs],
    }


async def find(store: Store, prediction_id: str, caller: Principal) -> Job:
    """The caller's prediction; another owner's is not found, as an unknown id."""
    job = await run_in_threadpool(store.find, prediction_id, caller.owner)
    if job is None or job.origin != "predictions":
        raise GatewayError(404, "not_found", PREDICTION_NOT_FOUND)
    return job


@router.get("/v1/predictions/{prediction_id}")
async def get_prediction(prediction_id: str, store: StoreDep, settings: SettingsDep, caller: Caller):
    return as_prediction(await find(store, prediction_id, caller), settings.link_seconds)


@router.post("/v1/predictions/{prediction_id}/cancel")
async def cancel_prediction(
    prediction_id: str, plane: DataPlaneDep, store: StoreDep, settings: SettingsDep, caller: Caller
):
    """A queued prediction is canceled at once; a running one stops within a denoising step."""
    job = await find(store, prediction_id, caller)
    canceled = await plane.cancel(job.id)
    assert canceled is not None, f"job {prediction_id} was deleted while it was canceled"  # as before: no answer
    return as_prediction(canceled, settings.link_seconds)


@router.get("/v1/models/{owner}/{name}/versions/{version_id}")
async def get_version(owner: str, name: str, version_id: str):
    """The one version this gateway serves, with a Cog-style schema of its input (client.run reads it)."""
    return {
        "id": version_id,
        "created_at": "2024-01-01T00:00:00Z",
        "cog_version": "0.9.0",
        "openapi_schema": {
            "openapi": "3.0.2",
            "info": {"title": "svd-triton", "version": VERSION},
            "paths": {},
            "components": {
                "schemas": {
                    "Input": PredictionInput.model_json_schema(),
                    "Output": {"type": "string", "format": "uri", "title": "Output"},
                }
            },
        },
    }


@router.get("/v1/webhooks/default/secret")
async def webhook_secret(webhooks: WebhooksDep, caller: Caller):
    """The key the caller's owner's webhook deliveries are signed with (replicate's `webhooks.default.secret()`)."""
    return {"key": await webhooks.secret(caller.owner)}


def _encode_cursor(created_at: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{job_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_at, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created_at), job_id
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise GatewayError(
            404, "not_found", "cursor: no such page (not a cursor this API returned)", "cursor"
        ) from None
