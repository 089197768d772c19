"""File uploads (Replicate's /v1/files: how the replicate client sends local file inputs) and the
generated videos (/v1/outputs: public, the unguessable link is the credential)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from fastapi import File, Form, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from svd_contract import MIME_TYPES

from ...deps import BaseURL, SettingsDep, StoreDep
from ...errors import GUARDED, GatewayError, HouseError, error_responses, family_router
from ...jobs import isoformat
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
async def list_files(store: StoreDep, base: BaseURL):
    return {
        "next": None,
        "previous": None,
        "results": [as_file(u, base) for u in await run_in_threadpool(store.list_uploads)],
    }


@files.get("/v1/files/{file_id}")
async def get_file(file_id: str, store: StoreDep, base: BaseURL):
    upload = await run_in_threadpool(store.get_upload, file_id)
    if upload is None:
        raise GatewayError(404, "not_found", "no such file, or it has expired")
    return as_file(upload, base)


@files.delete("/v1/files/{file_id}", status_code=204)
async def delete_file(file_id: str, store: StoreDep):
    if not await run_in_threadpool(store.delete_upload, file_id):
        raise GatewayError(404, "not_found", "no such file")
    return Response(status_code=204)


@outputs.get("/v1/outputs/{name}")
async def output_video(name: str, store: StoreDep, request: Request):
    """A generated video, until retention removes it."""
    job = await run_in_threadpool(store.job_for_output, name.split(".", 1)[0])
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
