"""fal's queue API (what `queue.fal.run` answers) for its hosted SVD apps, as the official `fal-client` 1.0.3
speaks it: `submit`, `subscribe`, `status`, `result` and `cancel`, sync and async.

- `POST /fal-ai/{app}` queues a request and answers the URLs of its status, result and cancel, absolute, which
  the client follows as given; `status`, `result` and `cancel` by id build the same URLs themselves.
- A status is one of fal's three: IN_QUEUE (`queue_position`: how many queued requests are ahead), IN_PROGRESS,
  or COMPLETED, which a failed or cancelled request is too, with `error` and `error_type` (fal-client raises on
  any other status). The job's log lines are the `logs` entries, one per line.
- No answer here is 408 or 409, which fal-client retries for about 50 s; a key's quota is 429 (fal-client retries
  that too, without reading Retry-After). The result of a request that did
  not succeed says why (`unsuccessful`); a result asked for early is 202 with the status.
- Where fal answers a valid request about a finished one with a 400 (cancelling it: ALREADY_COMPLETED), this
  answers 200: the request is well formed, and it is finished either way (a 409 would be retried).
- fal's per-app defaults apply (schemas.py), fal's names are translated, and the model's own parameter names
  are accepted beside them. Webhooks (`?fal_webhook=`) are refused with a 400: this gateway does not send fal's.

Each request is a job of origin `fal` in the shared store and queue; its `model` is the app id (fal-ai/fast-svd),
so a request is found under its own app only."""

from typing import Annotated, Any

from fastapi import Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from svd_contract import MIME_TYPES, VIDEO_FORMATS

from ...accounts import Principal
from ...deps import BaseURL, Caller, DataPlaneDep, SettingsDep, StoreDep
from ...errors import CODE_STATUS, GUARDED, GatewayError, error_responses, family_router
from ...jobs import isoformat, output_url
from ...service import check_image
from ...spec import JobSpec, echoed_image
from ...store import TERMINAL, Job, Store
from .errors import FalError, fal_error
from .schemas import APPS, RENAMED, CancelStatus, FalInput, FalVideo, QueueStatus, Submitted

OWNER = "fal-ai"
REQUEST = f"/{OWNER}/{{app}}/requests/{{request_id}}"
router = family_router(
    render_error=fal_error, invalid_status=422, tags=["fal"], responses=error_responses(FalError, *GUARDED, 404, 422)
)
App = Annotated[
    str, Path(description=f"The app under {OWNER}/ (another is not found).", json_schema_extra={"enum": list(APPS)})
]
QUEUE_STATUS = {"queued": "IN_QUEUE", "running": "IN_PROGRESS"}
"""fal's status of an unfinished job; a finished one is COMPLETED."""


def links(job: Job) -> dict[str, str]:
    url = f"{job.base_url}/{job.model}/requests/{job.id}"
    return {"request_id": job.id, "response_url": url, "status_url": f"{url}/status", "cancel_url": f"{url}/cancel"}


def log_entries(job: Job) -> list[dict[str, str]]:
    """The job's log lines as fal's entries, stamped with the job's start (its lines carry no time of their own)."""
    stamp = isoformat(job.started_at or job.created_at)
    return [
        {"message": line, "level": "INFO", "source": "user", "timestamp": stamp}
        for line in (job.logs or "").splitlines()
        if line
    ]


def failure(job: Job) -> dict[str, str]:
    """fal's `error` and `error_type` of a finished request that has no video; {} for one that has."""
    if job.status == "canceled":
        return {"error": f"request {job.id} was cancelled", "error_type": "client_cancelled"}
    if job.status == "failed":
        return {"error": job.error or f"request {job.id} failed", "error_type": job.error_code or "internal_error"}
    return {}


def fal_name(job: Job, field: str) -> str:
    """The request's own name of a parameter the model refused (fal's where the request used fal's)."""
    return next((fal for fal, ours in RENAMED.items() if ours == field and fal in job.input), field)


def unsuccessful(job: Job) -> JSONResponse:
    """The result of a request that failed or was cancelled: 404 for a cancelled one (it has none), 422 naming
    the field for an input the model refused (fal's validation error), else the failure's 5xx as the other
    families answer it. `x-fal-request-id` marks the answer as the request's own: fal-client retries a 5xx
    without it as an ingress error."""
    reason = failure(job)
    status, field = CODE_STATUS.get(job.error_code, 502), None
    if job.status == "canceled":
        status = 404
    elif job.error_code == "invalid_request":
        status, field = 422, fal_name(job, job.error_field or "body")
    return JSONResponse(
        fal_error(status, reason["error_type"], reason["error"], field),
        status_code=status,
        headers={"x-fal-request-id": job.id},
    )


async def find(store: Store, app: str, request_id: str, caller: Principal) -> Job:
    """The caller's request of `app`: a job of another app, family or owner is not found, as an unknown id."""
    job = await run_in_threadpool(store.find, request_id, caller.owner)
    if job is None or job.origin != "fal" or job.model != f"{OWNER}/{app}":
        raise GatewayError(404, "not_found", f"no request {request_id[:64]} of {OWNER}/{app[:64]}")
    return job


def serve(app: str, body_model: type[FalInput]) -> None:
    """POST /fal-ai/{app}, with that app's inputs."""

    @router.post(
        f"/{OWNER}/{app}",
        summary=f"Submit to {OWNER}/{app}",
        responses={200: {"model": Submitted}, **error_responses(FalError, 400)},
    )
    async def submit(
        # FastAPI reads this annotation at run time (each app's own model); mypy cannot take a variable as a type
        body: body_model,  # type: ignore[valid-type]
        request: Request,
        plane: DataPlaneDep,
        store: StoreDep,
        base: BaseURL,
        caller: Caller,
    ):
        fal_input: FalInput = body
        if "fal_webhook" in request.query_params:
            raise GatewayError(
                400,
                "bad_request",
                "fal_webhook: this gateway sends no fal webhooks; leave "
                "webhook_url out and poll the status (as subscribe does)",
                "query.fal_webhook",
            )
        given = await plane.image(fal_input.image_url, "image_url", caller, 422)
        image = await run_in_threadpool(check_image, given, "image_url", 422)  # refused now, naming fal's field
        echo = fal_input.model_dump(exclude_unset=True)
        echo["image_url"] = echoed_image(fal_input.image_url, image)
        spec = JobSpec("fal", image, fal_input.parameters(), echo, status=422, model=f"{OWNER}/{app}")
        job = await plane.queue(spec, base, caller)
        return {
            **links(job),
            "status": "IN_QUEUE",
            "queue_position": await run_in_threadpool(store.queue_position, job),
        }


for served, inputs in APPS.items():
    serve(served, inputs)


async def status_answer(job: Job, store: Store, logs: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {
        **links(job),
        "status": QUEUE_STATUS.get(job.status, "COMPLETED"),
        "logs": log_entries(job) if logs else None,
    }
    if job.status == "queued":
        answer["queue_position"] = await run_in_threadpool(store.queue_position, job)
    if job.status in TERMINAL:
        metrics = {"inference_time": job.predict_time} if job.predict_time is not None else {}
        answer.update(metrics=metrics, **failure(job))
    return answer


@router.get(
    f"{REQUEST}/status",
    summary="A request's status",
    responses={
        200: {"model": QueueStatus, "description": "COMPLETED (done, failed or cancelled)"},
        202: {"model": QueueStatus, "description": "IN_QUEUE or IN_PROGRESS"},
    },
)
async def status(
    app: App,
    request_id: str,
    store: StoreDep,
    caller: Caller,
    logs: bool = Query(False, description="1 or true: the request's log lines as `logs`."),
):
    job = await find(store, app, request_id, caller)
    return JSONResponse(await status_answer(job, store, logs), status_code=200 if job.status in TERMINAL else 202)


@router.get(
    REQUEST,
    summary="A request's result",
    responses={
        200: {"model": FalVideo},
        202: {"model": QueueStatus, "description": "Not finished yet"},
        **error_responses(FalError, 502, 503, 504),
    },
)
async def result(app: App, request_id: str, store: StoreDep, settings: SettingsDep, caller: Caller):
    """The video once COMPLETED; while queued or running, 202 with the status (fal-client asks only once the
    status is COMPLETED); a request that did not succeed answers why (`unsuccessful`)."""
    job = await find(store, app, request_id, caller)
    if job.status not in TERMINAL:
        return JSONResponse(await status_answer(job, store, False), status_code=202)
    if job.status != "succeeded":
        return unsuccessful(job)
    url = output_url(job, settings.link_seconds)
    if url is None:
        raise GatewayError(404, "not_found", f"request {job.id}: its video has expired")
    assert job.output_format is not None, "stored with its output_key"
    return {
        "video": {
            "url": url,
            "content_type": MIME_TYPES[job.output_format],
            "file_name": f"{job.id}{VIDEO_FORMATS[job.output_format].extension}",
            "file_size": job.output_bytes,
        },
        "seed": job.seed,
    }


@router.put(
    f"{REQUEST}/cancel",
    status_code=202,
    summary="Cancel a request",
    responses={
        202: {"model": CancelStatus, "description": "CANCELLATION_REQUESTED"},
        200: {"model": CancelStatus, "description": "ALREADY_COMPLETED"},
    },
)
async def cancel(app: App, request_id: str, plane: DataPlaneDep, store: StoreDep, caller: Caller):
    """A queued request never runs; a running one stops within a denoising step; a finished one stays as it is."""
    job = await find(store, app, request_id, caller)
    finished = job.status in TERMINAL
    if not finished:
        stopped = await plane.cancel(job.id)
        finished = stopped is None or stopped.status in ("succeeded", "failed")  # it ended on its own meanwhile
    if finished:
        return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=200)
    return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)
