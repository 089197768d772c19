"""What route handlers get injected: the per-process objects the lifespan created (one `GatewayState`, the
lifespan's state: request.state.gateway), and request helpers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request

from svd_triton.client import AsyncSVDClient
from .jobs import JobRunner
from .service import DataPlane
from .settings import Settings
from .store import Store
from .webhooks import Webhooks


@dataclass(frozen=True)
class GatewayState:
    """Everything one gateway process holds, created once by the lifespan and closed at shutdown."""

    settings: Settings
    store: Store
    svd: AsyncSVDClient
    """The one Triton gRPC client."""
    webhooks: Webhooks
    http: httpx.AsyncClient
    """For Triton's metrics (the Forge routes)."""
    runner: JobRunner
    plane: DataPlane


def get_state(request: Request) -> GatewayState:
    return request.state.gateway


State = Annotated[GatewayState, Depends(get_state)]


def get_settings(state: State) -> Settings:
    return state.settings


def get_store(state: State) -> Store:
    return state.store


def get_svd(state: State) -> AsyncSVDClient:
    return state.svd


def get_webhooks(state: State) -> Webhooks:
    return state.webhooks


def get_http(state: State) -> httpx.AsyncClient:
    return state.http


def get_plane(state: State) -> DataPlane:
    return state.plane


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
SVDDep = Annotated[AsyncSVDClient, Depends(get_svd)]
WebhooksDep = Annotated[Webhooks, Depends(get_webhooks)]
HTTPDep = Annotated[httpx.AsyncClient, Depends(get_http)]
DataPlaneDep = Annotated[DataPlane, Depends(get_plane)]


def base_url(request: Request, settings: SettingsDep) -> str:
    """This gateway's base URL in links: the configured public URL, else the one the request came in on."""
    return settings.public_url or str(request.base_url).rstrip("/")


BaseURL = Annotated[str, Depends(base_url)]
