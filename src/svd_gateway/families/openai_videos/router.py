"""OpenAI's Videos API (`/v1/videos`), as the official `openai` SDK calls it: `client.videos.create`,
`create_and_poll`, `retrieve`, `list`, `delete`, `download_content`, `extend` and `remix`. OpenAI announced
that its hosted Videos service shuts down; the SDK still ships `client.videos` and proxies speak it, so apps
written for it keep working here by changing their base URL and key.

Each video is a job in the same durable store and runner as predictions (queued → in_progress → completed |
failed; cancelled by DELETE). `seconds` are chained clips, 4 seconds each (`segments`); `size` is the
video's WIDTHxHEIGHT; the model's own parameters ride along as extra body fields. Errors are OpenAI's shape
(errors.py), so the SDK raises BadRequestError, NotFoundError or AuthenticationError naming the param.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal, overload

from fastapi import Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from svd_contract import MIME_TYPES, PARAMETERS, Deployment

from ...accounts import Principal
from ...deps import BaseURL, Caller, DataPlaneDep, SettingsDep, StoreDep, read_body
from ...errors import GUARDED, GatewayError, error_responses, family_router
from ...jobs import progress_percent
from ...schemas import IMAGE_MEDIA_TYPES, form_schema, inline_schema
from ...service import DataPlane, check_image
from ...settings import Settings
from ...spec import JobSpec
from ...store import Job, Store
from .errors import OpenAIError, openai_error
from .schemas import (
    MAX_SECONDS,
    SECONDS_PER_CLIP,
    SECONDS_TEXT,
    SIZE_TEXT,
    VideoCreateRequest,
    VideoExtendRequest,
    VideoRemixRequest,
)

router = family_router(
    render_error=openai_error, tags=["OpenAI Videos"], responses=error_responses(OpenAIError, 400, *GUARDED, 404, 409)
)
NATIVE_SIZES = ((1024, 576), (576, 1024))
SECONDS = re.compile(SECONDS_TEXT)
SIZE = re.compile(SIZE_TEXT)
STATUS = {
    "queued": "queued",
    "running": "in_progress",
    "succeeded": "completed",
    "failed": "failed",
    "canceled": "failed",
}
POLL_AFTER_MS = "500"
"""`openai-poll-after-ms`: how often the SDK's create_and_poll asks while a video is not finished."""
MODEL = "stable-video-diffusion-img2vid-xt"
"""The `model` reported when the request named none."""
NOT_FOUND = "no such video"
OWN_FIELDS = {"prompt", "negative_prompt", "input_reference", "model", "seconds", "size"}
"""Request fields that are OpenAI's; the rest are the model's parameters."""


def create_body_schema(model, file: str, description: str, media_types: str) -> dict:
    """The request body as JSON or as the SDK's multipart form (where `file` is a file part of `media_types`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": inline_schema(model)},
                "multipart/form-data": {
                    "schema": form_schema(model, {file: description}),
                    "encoding": {file: {"contentType": media_types}},
                },
            },
        }
    }


def as_video(job: Job, settings: Settings) -> dict[str, Any]:
    """A job as OpenAI's Video object (times in Unix seconds)."""
    given = job.input
    failed = job.status in ("failed", "canceled")
    error = (
        {
            "code": job.error_code or "canceled",
            "message": job.error or "the video was canceled",
            "param": job.error_field,
        }
        if failed
        else None
    )
    expires = _unix(job.completed_at) + settings.output_seconds if job.output_key and job.completed_at else None
    return {
        "id": job.id,
        "object": "video",
        "model": given.get("model") or MODEL,
        "status": STATUS[job.status],
        "progress": progress_percent(job),
        "created_at": _unix(job.created_at),
        "completed_at": _unix(job.completed_at),
        "expires_at": int(expires) if expires else None,
        "error": error,
        "prompt": given.get("prompt"),
        "seconds": given.get("seconds"),
        "size": given.get("size"),
        "remixed_from_video_id": given.get("remixed_from_video_id"),
    }


@overload
def _unix(moment: datetime) -> int: ...


@overload
def _unix(moment: datetime | None) -> int | None: ...


def _unix(moment: datetime | None) -> int | None:
    """Unix seconds of the store's naive UTC times."""
    return int(moment.replace(tzinfo=UTC).timestamp()) if moment else None


def clips(seconds: str | int | None, field: str, most: int | None) -> int | None:
    """How many chained clips `seconds` asks for (None: not given); `most` is what the deployment allows."""
    if seconds is None:
        return None
    text = str(seconds)
    spelled = (
        SECONDS.match(text)
        if isinstance(seconds, str)
        else not isinstance(seconds, bool)
        and SECONDS_PER_CLIP <= seconds <= MAX_SECONDS
        and seconds % SECONDS_PER_CLIP == 0
    )
    count = int(text) // SECONDS_PER_CLIP if spelled else 0
    if count < 1 or (most is not None and count > most):
        allowed = ", ".join(str(SECONDS_PER_CLIP * k) for k in range(1, (most or 3) + 1)) + ("" if most else ", ...")
        raise GatewayError(
            400,
            "invalid_value",
            f"{field}={text[:20]!r} is not supported; accepted: {allowed} (each "
            f"{SECONDS_PER_CLIP} seconds is one chained clip, up to this deployment's max_segments)",
            field,
        )
    return count


def dimensions(size: str, deployment: Deployment | None) -> tuple[int, int]:
    """WIDTHxHEIGHT within the contract's sides and the deployment's pixel budget, else a 400 listing them."""
    side = PARAMETERS["width"]
    low, high = side.low, side.high
    assert low is not None and high is not None, "the contract's width has a static range"
    max_pixels = deployment.max_pixels if deployment else None
    found = SIZE.match(size)
    width, height = (int(found.group(1)), int(found.group(2))) if found else (0, 0)

    def fits(w: int, h: int) -> bool:
        return all(low <= v <= high and v % side.multiple_of == 0 for v in (w, h)) and (
            max_pixels is None or w * h <= max_pixels
        )

    if not fits(width, height):
        native = [f"{w}x{h}" for w, h in NATIVE_SIZES if fits(w, h)]
        budget = f" and width×height ≤ {max_pixels} (this deployment's max_pixels)" if max_pixels else ""
        raise GatewayError(
            400,
            "invalid_value",
            f"size={size[:20]!r} is not supported; accepted: "
            + (", ".join(native) + " (SVD's own), or " if native else "")
            + f"WIDTHxHEIGHT with each side a multiple of {side.multiple_of} in "
            f"{side.low:g}–{side.high:g}{budget}",
            "size",
        )
    return width, height


async def find(store: Store, video_id: str, caller: Principal, field: str = "video_id") -> Job:
    """The caller's video; another owner's is not found, as an unknown id."""
    job = await run_in_threadpool(store.find, video_id, caller.owner)
    if job is None or job.origin != "videos":
        raise GatewayError(404, "not_found", f"{NOT_FOUND}: {video_id[:40]}", field)
    return job


async def completed(store: Store, video_id: str, caller: Principal, field: str) -> Job:
    """A completed video of the caller's to build on (extend, remix)."""
    job = await find(store, video_id, caller, field)
    if job.status != "succeeded":
        raise GatewayError(
            400,
            "invalid_value",
            f"{field}: video {video_id} is {STATUS[job.status]}; only a completed video can be built on",
            field,
        )
    return job


async def reference_image(
    body: VideoCreateRequest, uploaded: bytes | None, plane: DataPlane, caller: Principal
) -> bytes | None:
    """input_reference as bytes: the uploaded file, an image URL or data URI, or a /v1/files id; None: text-to-video."""
    reference = body.input_reference
    if uploaded is not None:
        return await run_in_threadpool(check_image, uploaded, "input_reference")
    if reference is None:
        return None
    if reference.file_id:
        image = await plane.upload(reference.file_id, "input_reference.file_id", caller.owner, 404)
    elif reference.image_url:
        image = await plane.image(reference.image_url, "input_reference.image_url", caller)
    else:
        raise GatewayError(400, "invalid_value", "input_reference: give image_url or file_id", "input_reference")
    return await run_in_threadpool(check_image, image, "input_reference")


async def extended_id(body: VideoExtendRequest, uploaded: bytes | None, store: Store, caller: Principal) -> str:
    """The video to extend: by reference, or found by the bytes of its file (how the openai SDK sends `video`:
    its multipart encoding takes files only)."""
    if uploaded is not None:
        job = await run_in_threadpool(store.job_with_output, "videos", caller.owner, uploaded)
        if job is None:
            raise GatewayError(
                404,
                "not_found",
                "video: not a video this gateway made; send the file as "
                'downloaded from /v1/videos/{id}/content, or {"id": ...}',
                "video",
            )
        return job.id
    if body.video is None:
        raise GatewayError(400, "invalid_value", "video: Field required (a completed video's id, or its file)", "video")
    return body.video.id


def video_spec(image: bytes, params: dict[str, Any], given: dict[str, Any]) -> JobSpec:
    """A video job; its image is kept beside it for later extensions and remixes."""
    return JobSpec("videos", image, params, given, keep_image=True)


@router.post(
    "/v1/videos",
    openapi_extra=create_body_schema(
        VideoCreateRequest, "input_reference", "The first frame: a PNG, JPEG or WebP file", IMAGE_MEDIA_TYPES
    ),
)
async def create_video(request: Request, plane: DataPlaneDep, settings: SettingsDep, base: BaseURL, caller: Caller):
    """A video from an image (input_reference) or, without one, from the prompt (text-to-video)."""
    body, files = await read_body(request, VideoCreateRequest, files=("input_reference",))
    image = await reference_image(body, files.get("input_reference"), plane, caller)
    params = body.model_dump(exclude_none=True, exclude=OWN_FIELDS)
    deployment = await plane.deployment()
    for ours, theirs in (("segments", "seconds"), ("width", "size"), ("height", "size")):
        if ours in params and getattr(body, theirs) is not None:
            raise GatewayError(400, "invalid_value", f"{theirs} and {ours} name the same setting; give one", theirs)
    count = clips(body.seconds, "seconds", deployment.max_segments if deployment else None)
    if count:
        params["segments"] = count
    if body.size is not None:
        params["width"], params["height"] = dimensions(body.size, deployment)
    if image is None:
        params.update(prompt=body.prompt, **({"negative_prompt": body.negative_prompt} if body.negative_prompt else {}))
    width = params.get("width", deployment.default_width if deployment else None)
    height = params.get("height", deployment.default_height if deployment else None)
    given = {
        "prompt": body.prompt,
        "model": body.model,
        "seconds": str(SECONDS_PER_CLIP * params.get("segments", 1)),
        "size": f"{width}x{height}" if width and height else "default",
    }
    job = await plane.queue(video_spec(image or b"", params, given), base, caller)
    return as_video(job, settings)


@router.get("/v1/videos")
async def list_videos(
    store: StoreDep,
    settings: SettingsDep,
    caller: Caller,
    after: str | None = Query(None, max_length=40),
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
):
    """OpenAI's cursor page: `after` is the last id of the page before."""
    cursor = None
    if after:
        previous = await run_in_threadpool(store.find, after, caller.owner)
        if previous is None or previous.origin != "videos":  # a page after nothing: not found, as an unknown id
            raise GatewayError(404, "not_found", f"after: {NOT_FOUND}: {after}", "after")
        cursor = (previous.created_at, previous.id)
    jobs = await run_in_threadpool(store.page, "videos", caller.owner, cursor, limit + 1, order == "desc")
    data = [as_video(job, settings) for job in jobs[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(jobs) > limit,
    }


@router.get("/v1/videos/{video_id}")
async def retrieve_video(video_id: str, store: StoreDep, settings: SettingsDep, caller: Caller):
    job = await find(store, video_id, caller)
    video = as_video(job, settings)
    headers = {"openai-poll-after-ms": POLL_AFTER_MS} if video["status"] in ("queued", "in_progress") else None
    return JSONResponse(video, headers=headers)


@router.delete("/v1/videos/{video_id}")
async def delete_video(video_id: str, plane: DataPlaneDep, store: StoreDep, caller: Caller):
    """Delete a video and its files; a queued or running one is canceled first (it stops within a step)."""
    job = await find(store, video_id, caller)
    if job.status not in ("succeeded", "failed", "canceled"):
        await plane.cancel(job.id)
        await plane.wait(job.id, 30)  # a job running on another replica stops at its next progress flush
    if not await run_in_threadpool(store.delete, job.id):
        raise GatewayError(409, "conflict", f"video {job.id} is still stopping; delete it again shortly", "video_id")
    if job.input.get("image_file"):  # a video from before its image was kept with the job
        await run_in_threadpool(store.delete_upload, job.input["image_file"], caller.owner)
    return {"id": job.id, "object": "video.deleted", "deleted": True}


@router.get("/v1/videos/{video_id}/content", responses=error_responses(OpenAIError, 502))
async def download_content(
    video_id: str,
    request: Request,
    plane: DataPlaneDep,
    store: StoreDep,
    caller: Caller,
    variant: Literal["video", "thumbnail", "spritesheet"] = "video",
):
    """The MP4 (byte ranges supported), its first frame as a JPEG, or a JPEG sprite sheet of its frames."""
    job = await find(store, video_id, caller)
    if job.status != "succeeded" or not job.output_key or job.output_removed:
        raise GatewayError(
            404 if job.output_removed else 400,
            "invalid_value",
            f"video {job.id} is {STATUS[job.status]}; its content is there once it has completed"
            if not job.output_removed
            else f"video {job.id}: its content has expired",
            "video_id",
        )
    assert job.output_format is not None, "stored with its output_key"
    try:
        if variant == "video":
            return await run_in_threadpool(
                store.blobs.response,
                f"outputs/{job.output_key}",
                MIME_TYPES[job.output_format],
                request.headers.get("range"),
            )
        return Response(await plane.still(job, variant), media_type="image/jpeg")
    except FileNotFoundError:
        raise GatewayError(404, "not_found", f"video {job.id}: its content has expired", "video_id") from None


@router.post(
    "/v1/videos/extensions",
    openapi_extra=create_body_schema(
        VideoExtendRequest, "video", "A video of this gateway, as downloaded", MIME_TYPES["mp4"]
    ),
)
async def extend_video(
    request: Request, plane: DataPlaneDep, store: StoreDep, settings: SettingsDep, base: BaseURL, caller: Caller
):
    """The original request with `seconds` more clips chained after it: the same image, settings and seed, so
    its first clips are the original's and the new ones continue from the original's last frame."""
    body, files = await read_body(request, VideoExtendRequest, files=("video",))
    original = await completed(store, await extended_id(body, files.get("video"), store, caller), caller, "video")
    deployment = await plane.deployment()
    had = original.params.get("segments", 1)
    most = deployment.max_segments - had if deployment else None
    if most is not None and most < 1:
        raise GatewayError(
            400,
            "invalid_value",
            f"video: {original.id} already has this deployment's max_segments ({had} clips); it cannot be extended",
            "video",
        )
    count = clips(body.seconds, "seconds", most)
    params = {**original.params, "segments": had + count, "seed": original.seed}
    given = {
        **original.input,
        "prompt": body.prompt,
        "seconds": str(SECONDS_PER_CLIP * (had + count)),
        "extended_from_video_id": original.id,
        "remixed_from_video_id": None,
    }
    job = await plane.queue(video_spec(await plane.kept_input(original, "video"), params, given), base, caller)
    return as_video(job, settings)


@router.post("/v1/videos/{video_id}/remix")
async def remix_video(
    video_id: str,
    body: VideoRemixRequest,
    plane: DataPlaneDep,
    store: StoreDep,
    settings: SettingsDep,
    base: BaseURL,
    caller: Caller,
):
    """A new video from the original's input and settings with the new prompt: with an image, another take of it
    (a new seed unless one is given); text-to-video, a new first frame from the new prompt."""
    original = await completed(store, video_id, caller, "video_id")
    params = {key: value for key, value in original.params.items() if key != "seed"}
    params.update(body.model_dump(exclude_none=True, exclude={"prompt"}))
    if "prompt" in params:  # text-to-video: the new prompt makes the first frame
        params["prompt"] = body.prompt
    given = {
        **original.input,
        "prompt": body.prompt,
        "remixed_from_video_id": original.id,
        "extended_from_video_id": None,
    }
    job = await plane.queue(video_spec(await plane.kept_input(original, "video"), params, given), base, caller)
    return as_video(job, settings)
