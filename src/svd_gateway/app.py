"""The app factory. The lifespan creates the per-process objects once (one Triton gRPC client, the store,
the job runner, the webhook sender, an HTTP client for Triton's metrics, the data plane), declared as one
`GatewayState` that it hands to every request as the lifespan's state, and closes them at shutdown. Served
by `svd-triton gateway` (the main thread), it also turns SIGTERM into a drain of the job runner."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib.metadata import version

import httpx
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from svd_contract import PARAMETERS
from svd_triton.client import AsyncSVDClient

from .access_log import redact_access_log
from .accounts import Keyring
from .blobs import open_blobs
from .compat import openapi_with_exact_integers
from .deps import GatewayState
from .errors import ErrorShapes, install_handlers
from .families import Family, fal, files, forge, openai_style, openai_videos, replicate, stability, tir
from .guard import Guard
from .jobs import JobRunner
from .metrics import GatewayMetrics, RequestCounter
from .model_client import ModelClient
from .outbound import AllowList, ImageFetcher
from .routers import health, playground
from .service import DataPlane
from .settings import Settings
from .store import Store
from .webhooks import Webhooks

FAMILIES: tuple[Family, ...] = (
    replicate.FAMILY,
    files.FAMILY,
    tir.FAMILY,
    forge.FAMILY,
    openai_style.FAMILY,
    openai_videos.FAMILY,
    stability.FAMILY,
    fal.FAMILY,
)
"""The API families this gateway speaks: one line each (svd_gateway/families/)."""


def create_app(settings: Settings, model: Callable[[Settings], ModelClient] | None = None) -> FastAPI:
    """The gateway for `settings`; `model` makes its model client (default: Triton's gRPC client, AsyncSVDClient)."""
    metrics = GatewayMetrics(settings.replica_id)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        redact_access_log()
        blobs = await run_in_threadpool(open_blobs, settings.storage_url, settings.data_dir)
        store = await run_in_threadpool(Store, settings.database, blobs)
        metrics.watch(store)
        svd = (model or triton_client)(settings)
        allow = AllowList(settings.webhook_allow)
        webhooks = Webhooks(
            store,
            configured=settings.webhook_secret,
            data_dir=settings.data_dir,
            allow=allow,
            attempts=settings.webhook_attempts,
            backoff=settings.webhook_backoff,
            timeout=settings.webhook_timeout,
            outcomes=metrics.webhooks,
        )
        http = httpx.AsyncClient()
        fetcher = ImageFetcher(allow, max_bytes=settings.max_body_bytes, seconds=settings.fetch_seconds)
        runner = JobRunner(
            store,
            svd,
            webhooks,
            settings,
            metrics,
            webhook_payloads={
                origin: render for family in FAMILIES for origin, render in family.webhook_payloads.items()
            },
            progress_lines={origin: render for family in FAMILIES for origin, render in family.progress_lines.items()},
        )
        state = GatewayState(
            settings=settings,
            store=store,
            svd=svd,
            webhooks=webhooks,
            http=http,
            runner=runner,
            plane=DataPlane(store, runner, svd, webhooks, fetcher, settings),
            metrics=metrics,
            keyring=Keyring(store, settings.token),
        )
        await runner.start()
        _drain_on_sigterm(runner)
        scrape = metrics.serve(settings.metrics_listen) if settings.metrics_listen else None
        try:
            yield {"gateway": state}  # the lifespan's state: every request's request.state.gateway (deps.State)
        finally:
            if scrape is not None:
                scrape.shutdown()
            await runner.stop()
            await webhooks.close()
            await fetcher.close()
            await http.aclose()
            await svd.close()
            store.close()

    app = FastAPI(
        title="svd-triton gateway",
        version=version("svd-triton"),
        lifespan=lifespan,
        description="Hosted-SVD-compatible REST routes (Replicate predictions, E2E TIR, Nebius Forge, "
        "OpenAI-style video generations, OpenAI's Videos API, Stability AI's image-to-video) "
        "in front of a Triton svd_xt deployment.",
    )
    # FastAPI's documented way to replace the document's builder; mypy refuses any assignment to a method
    app.openapi = openapi_with_exact_integers(  # type: ignore[method-assign]
        app, [bound for p in PARAMETERS.values() for bound in (p.low, p.high) if isinstance(bound, int)]
    )
    install_handlers(app)
    for router in (*(router for family in FAMILIES for router in family.routers), health.router, playground.router):
        app.include_router(router)
    app.state.error_shapes = ErrorShapes(
        tuple((family.prefixes, family.render_error) for family in FAMILIES if family.prefixes)
    )
    app.add_middleware(
        Guard,
        max_body_bytes=settings.max_body_bytes,
        body_seconds=settings.body_seconds,
        shapes=app.state.error_shapes,
    )
    app.add_middleware(RequestCounter, counter=metrics.requests)
    return app


def triton_client(settings: Settings) -> ModelClient:
    """The one Triton gRPC client of a gateway process."""
    return AsyncSVDClient(settings.triton_url, protocol="grpc", token=settings.token, timeout=settings.timeout)


def _drain_on_sigterm(runner: JobRunner) -> None:
    """Chain a SIGTERM handler before uvicorn's (which stops the server): the runner stops claiming and drains
    at once, while uvicorn finishes the requests in flight. Only in the main thread (signals live there)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def drain_then_stop(number, frame):
        loop.call_soon_threadsafe(runner.begin_drain)
        if callable(previous):
            previous(number, frame)

    signal.signal(signal.SIGTERM, drain_then_stop)
