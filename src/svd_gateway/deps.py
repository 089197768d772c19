"""What route handlers get injected: the per-process objects the lifespan created (one `GatewayState`, the
lifespan's state: request.state.gateway), and request helpers (the base URL, a JSON-or-multipart body)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypeVar

import httpx
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from .accounts import Keyring, Principal, Scope
from .errors import GatewayError
from .jobs import JobRunner
from .metrics import GatewayMetrics
from .model_client import ModelClient
from .service import DataPlane
from .settings import Settings
from .store import Store
from .webhooks import Webhooks


@dataclass(frozen=True)
class GatewayState:
    """Everything one gateway process holds, created once by the lifespan and closed at shutdown."""

    settings: Settings
    store: Store
    svd: ModelClient
    """The one Triton gRPC client."""
    webhooks: Webhooks
    http: httpx.AsyncClient
    """For Triton's metrics (the Forge routes)."""
    runner: JobRunner
    plane: DataPlane
    metrics: GatewayMetrics
    keyring: Keyring


def get_state(request: Request) -> GatewayState:
    return request.state.gateway


State = Annotated[GatewayState, Depends(get_state)]


def get_settings(state: State) -> Settings:
    return state.settings


def get_store(state: State) -> Store:
    return state.store


def get_svd(state: State) -> ModelClient:
    return state.svd


def get_webhooks(state: State) -> Webhooks:
    return state.webhooks


def get_http(state: State) -> httpx.AsyncClient:
    return state.http


def get_plane(state: State) -> DataPlane:
    return state.plane


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
SVDDep = Annotated[ModelClient, Depends(get_svd)]
WebhooksDep = Annotated[Webhooks, Depends(get_webhooks)]
HTTPDep = Annotated[httpx.AsyncClient, Depends(get_http)]
DataPlaneDep = Annotated[DataPlane, Depends(get_plane)]


def scoped(scope: Scope):
    """A dependency: the principal the Guard let this request in as, if its key has `scope` (else 403)."""

    def principal(request: Request) -> Principal:
        found: Principal = request.state.principal
        if scope not in found.scopes:
            raise GatewayError(403, "forbidden", f"this API key ({found.key}) lacks the {scope} scope")
        return found

    return principal


Caller = Annotated[Principal, Depends(scoped("generate"))]
"""A client: its jobs and files are its owner's, and only its owner's are found."""
Operator = Annotated[Principal, Depends(scoped("admin"))]
"""An operator: the routes that act on the deployment (Forge start/stop, /metrics)."""
M = TypeVar("M", bound=BaseModel)


def base_url(request: Request, settings: SettingsDep) -> str:
    """This gateway's base URL in links: the configured public URL, else the one the request came in on."""
    return settings.public_url or str(request.base_url).rstrip("/")


BaseURL = Annotated[str, Depends(base_url)]


async def read_body(request: Request, model: type[M], files: tuple[str, ...] = ()) -> tuple[M, dict[str, bytes]]:
    """A body sent as JSON or as multipart/form-data (form fields named `a[b]` become nested `{"a": {"b"}}`),
    validated by `model`; the multipart file fields among `files` come back as bytes, by name."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    uploads: dict[str, bytes] = {}
    if content_type == "application/json":
        try:
            fields = await request.json()
        except ValueError:
            raise GatewayError(400, "invalid_request", "body: not valid JSON", "body") from None
    elif content_type == "multipart/form-data":
        fields = {}
        limit = get_state(request).settings.max_body_bytes  # the guard has counted the body already
        async with request.form(max_files=len(files) or 1, max_part_size=limit) as form:
            seen = set()
            for name, value in form.multi_items():
                if name in seen:  # one value per field: a repeated one would be read as whichever came last
                    raise GatewayError(400, "invalid_request", f"{name[:40]}: given more than once", name[:40])
                seen.add(name)
                if not isinstance(value, str):
                    if name not in files:
                        raise GatewayError(400, "invalid_request", f"{name}: a file is not accepted here", name)
                    uploads[name] = await value.read()
                    continue
                outer, _, inner = name.partition("[")
                if inner.endswith("]"):
                    fields.setdefault(outer, {})[inner[:-1]] = value
                else:
                    fields[name] = value
    else:
        raise GatewayError(
            400,
            "invalid_request",
            f"body: Content-Type {content_type[:80]!r} is not accepted; send application/json or multipart/form-data",
            "body",
        )
    try:  # form fields are text: there "4" is the integer 4 and "true" the boolean; JSON says which it means
        return model.model_validate(fields, strict=content_type == "application/json"), uploads
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from None
