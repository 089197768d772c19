"""File uploads (Replicate's /v1/files: how the replicate client sends local file inputs), each its uploader's
owner's alone, and the generated videos (/v1/outputs: a signed link that expires is the credential, as a
presigned bucket URL; jobs.output_url)."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import File, Form, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from svd_contract import MIME_TYPES

from ...deps import BaseURL, Caller, SettingsDep, StoreDep
from ...errors import GUARDED, GatewayError, HouseError, error_responses, family_router
from ...jobs import isoformat, link_holds, read_link
from ...schemas import IMAGE_MEDIA_TYPES
from ...store import Upload

files = family_router(tags=["files"], responses=error_responses(HouseError, 400, *GUARDED, 404))
outputs = family_router(tags=["outputs"], responses=error_responses(HouseError, 404))
CHUNK = 1024 * 1024


def as_file(upload: Upload, base: str, metadata: Any = None) -> dict:
    return {
        "id": upload.id,
        "name": upload.name,
        "content_type": upload.content_type,
        "size": upload.size,
        "etag": upload.sha256[:32],
        "checksums": {"sha256": upload.sha256},
        "metadata": {} if metadata is None else metadata,
        "created_at": isoformat(upload.created_at),
        "expires_at": isoformat(upload.expires_at),
        "urls": {"get": f"{base}/v1/files/{upload.id}"},
    }


UPLOAD_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "encoding": {"content": {"contentType": f"{IMAGE_MEDIA_TYPES}, application/octet-stream"}}
            }
        }
    }
}
"""Any file may be uploaded (application/octet-stream); the images are named first, as what the generation
routes take by reference (a fuzzer's image generators then fill the part)."""


@files.post("/v1/files", status_code=201, openapi_extra=UPLOAD_BODY)
async def upload_file(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    base: BaseURL,
    caller: Caller,
    content: UploadFile = File(),
    metadata: str = Form(
        "{}",
        json_schema_extra={"contentMediaType": "application/json"},
        description="JSON, returned parsed as the file's metadata (other text is returned as the string it is)",
    ),
):
    form = await request.form()  # other fields are ignored; these two are read once, so may be given once
    repeated = next((name for name in ("content", "metadata") if len(form.getlist(name)) > 1), None)
    if repeated is not None:  # FastAPI would read whichever came last
        raise GatewayError(400, "invalid_request", f"{repeated}: given more than once", repeated)
    try:
        extra = json.loads(metadata)
    except json.JSONDecodeError:  # contentMediaType annotates, it does not assert: any text is a valid form field
        extra = metadata
    digest, size = hashlib.sha256(), 0
    target = tempfile.NamedTemporaryFile(dir=store.blobs.scratch, suffix=".partial", delete=False)
    try:
        with target:
            while chunk := await content.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                await run_in_threadpool(target.write, chunk)
        upload = await run_in_threadpool(
            store.add_upload,
            caller.owner,
            content.filename or "file",
            content.content_type or "application/octet-stream",
            target.name,
            digest.hexdigest(),
            size,
            settings.upload_seconds,
        )
    finally:  # moved into the store, or not wanted: the partial file goes either way
        Path(target.name).unlink(missing_ok=True)
    return as_file(upload, base, extra)


@files.get("/v1/files")
async def list_files(store: StoreDep, base: BaseURL, caller: Caller):
    return {
        "next": None,
        "previous": None,
        "results": [as_file(u, base) for u in await run_in_threadpool(store.list_uploads, caller.owner)],
    }


@files.get("/v1/files/{file_id}")
async def get_file(file_id: str, store: StoreDep, base: BaseURL, caller: Caller):
    upload = await run_in_threadpool(store.get_upload, file_id, caller.owner)
    if upload is None:
        raise GatewayError(404, "not_found", "no such file, or it has expired")
    return as_file(upload, base)


@files.delete("/v1/files/{file_id}", status_code=204)
async def delete_file(file_id: str, store: StoreDep, caller: Caller):
    if not await run_in_threadpool(store.delete_upload, file_id, caller.owner):
        raise GatewayError(404, "not_found", "no such file")
    return Response(status_code=204)


@outputs.get("/v1/outputs/{name}")
async def output_video(name: str, store: StoreDep, request: Request):
    """A generated video, through a link its job handed out (`{id}_{expires}_{signature}.{ext}`), until the link
    expires and until retention removes the video. A name that is no such link answers 404, as a video that does
    not exist; a link that expired 403."""
    link = read_link(name)
    job = None if link is None else await run_in_threadpool(store.get, link[0])
    if link is None or job is None or job.output_removed or not link_holds(job, link[1], link[2]):
        job = None
    elif link[1] < time.time():
        raise GatewayError(403, "expired", "this video link has expired; read the job again for a fresh one")
    try:
        if job is None:
            raise FileNotFoundError(name)
        return await run_in_threadpool(
            store.blobs.response,
            f"outputs/{job.output_key}",
            MIME_TYPES.get(job.output_format) if job.output_format is not None else None,
            request.headers.get("range"),
        )
    except FileNotFoundError:
        raise GatewayError(404, "not_found", "no such video, or it has expired") from None
