"""What route handlers get injected: the per-process objects the lifespan created, and request helpers."""
from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated

import httpx
from fastapi import Depends, Request

from svd_triton.client import AsyncSVDClient
from . import schemas
from .errors import GatewayError
from .jobs import JobRunner
from .settings import Settings
from .store import Store
from .webhooks import Webhooks

DATA_URI = re.compile(r"^data:[\w.+/-]*(;[\w=.+-]+)*;base64,", re.I)
UPLOAD_URL = re.compile(schemas.UPLOAD_URL)


def _state(name: str):
    def get(request: Request):
        return getattr(request.app.state, name)
    return get


SettingsDep = Annotated[Settings, Depends(_state("settings"))]
StoreDep = Annotated[Store, Depends(_state("store"))]
RunnerDep = Annotated[JobRunner, Depends(_state("runner"))]
SVDDep = Annotated[AsyncSVDClient, Depends(_state("svd"))]
WebhooksDep = Annotated[Webhooks, Depends(_state("webhooks"))]
HTTPDep = Annotated[httpx.AsyncClient, Depends(_state("http"))]


def base_url(request: Request) -> str:
    """This gateway's base URL in links: the configured public URL, else the one the request came in on."""
    return request.app.state.settings.public_url or str(request.base_url).rstrip("/")


BaseURL = Annotated[str, Depends(base_url)]


def image_bytes(value: str, store: Store, field: str, status: int = 400) -> bytes:
    """An image given as base64, a data URI, or the URL of a file uploaded to this gateway (never fetched)."""
    if value.startswith(("http://", "https://")):
        upload = UPLOAD_URL.match(value)
        if not upload:
            raise GatewayError(status, "invalid_request",
                               f"{field}: URLs are not fetched; send the image as base64, a data URI, or upload it "
                               "to this gateway's /v1/files and pass the file's URL", field)
        found = store.get_upload(upload.group(2))
        if not found:
            raise GatewayError(status, "invalid_request", f"{field}: no uploaded file {upload.group(2)[:40]} on this "
                               "gateway (or it has expired)", field)
        return store.read_upload(found.id)
    try:
        return base64.b64decode(DATA_URI.sub("", value.strip()), validate=True)
    except (binascii.Error, ValueError):
        raise GatewayError(status, "invalid_request",
                           f"{field}: not valid base64 (or a data:image/...;base64, URI)", field) from None
