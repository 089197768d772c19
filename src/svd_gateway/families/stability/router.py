"""Stability AI's image-to-video API (v2beta), the first hosted SVD: `POST /v2beta/image-to-video` (multipart
`image`, `seed`, `cfg_scale`, `motion_bucket_id`) answers `{"id"}`; `GET /v2beta/image-to-video/result/{id}`
answers 202 while the job runs, then the MP4 (`Accept: video/*`, the default) with `finish-reason` and `seed`
headers, or JSON with the video in base64 (`Accept: application/json`). Jobs live in the same durable store
and runner as predictions. The video keeps the image's own size, scaled into the deployment's pixel budget
(resize_mode `keep`), unless `width`/`height` are given. Errors are Stability's shape (errors.py)."""

from __future__ import annotations

import base64

from fastapi import Header, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from svd_contract import MIME_TYPES

from ...deps import BaseURL, Caller, DataPlaneDep, StoreDep, read_body
from ...errors import CODE_STATUS, GUARDED, GatewayError, error_responses, family_router
from ...schemas import IMAGE_MEDIA_TYPES, form_schema
from ...service import check_image
from ...spec import JobSpec, image_digest
from .errors import StabilityError, stability_error
from .schemas import StabilityRequest

router = family_router(
    render_error=stability_error,
    tags=["Stability AI"],
    responses=error_responses(StabilityError, 400, *GUARDED, 404, 409, 500),
)
STABILITY_FIELDS = {"seed", "cfg_scale"}
"""Stability's names that are not the model's own (motion_bucket_id is)."""


REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {**form_schema(StabilityRequest, {"image": "PNG, JPEG or WebP"}), "required": ["image"]},
                "encoding": {"image": {"contentType": IMAGE_MEDIA_TYPES}},
            }
        },
    }
}


@router.post("/v2beta/image-to-video", openapi_extra=REQUEST_BODY)
async def image_to_video(request: Request, plane: DataPlaneDep, base: BaseURL, caller: Caller):
    """Start a generation; poll the result route with the id returned."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise GatewayError(
            400, "invalid_request", "send the request as multipart/form-data with an `image` file", "image"
        )
    body, files = await read_body(request, StabilityRequest, files=("image",))
    if "image" not in files:
        raise GatewayError(400, "invalid_request", "image: required (a PNG or JPEG file)", "image")
    image = await run_in_threadpool(check_image, files["image"], "image")
    params = body.model_dump(exclude_none=True, exclude=STABILITY_FIELDS)
    params["max_guidance_scale"] = body.cfg_scale
    if body.seed:
        params["seed"] = body.seed
    if "width" not in params and "height" not in params:
        params.setdefault("resize_mode", "keep")
    given = {**body.model_dump(exclude_none=True), "image": image_digest(image)}
    job = await plane.queue(JobSpec("stability", image, params, given), base, caller)
    return {"id": job.id}


@router.get("/v2beta/image-to-video/result/{generation_id}")
async def result(generation_id: str, store: StoreDep, caller: Caller, accept: str = Header("video/*")):
    """202 while in progress; the video (or JSON with it in base64); a failed generation's error."""
    job = await run_in_threadpool(store.find, generation_id, caller.owner)
    if job is None or job.origin != "stability":
        raise GatewayError(404, "not_found", f"no generation found for id {generation_id[:64]}", "id")
    if job.status in ("queued", "running"):
        return JSONResponse({"id": job.id, "status": "in-progress"}, status_code=202)
    if job.status != "succeeded":
        status = CODE_STATUS.get(job.error_code, 500)
        raise GatewayError(
            status if status < 500 else 500,
            job.error_code or "server_error",
            job.error or f"the generation was {job.status}",
            job.error_field,
        )
    try:
        video = await run_in_threadpool(store.read_output, job.output_key)
    except FileNotFoundError:
        raise GatewayError(404, "not_found", f"generation {job.id}: its video has expired", "id") from None
    if "application/json" in accept.lower():
        return {"video": base64.b64encode(video).decode(), "finish_reason": "SUCCESS", "seed": job.seed}
    assert job.output_format is not None, "stored with its video"
    return Response(
        video, media_type=MIME_TYPES[job.output_format], headers={"finish-reason": "SUCCESS", "seed": str(job.seed)}
    )
