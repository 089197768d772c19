"""A REST gateway in front of Triton that speaks the request shapes of hosted SVD endpoints.

- Replicate predictions (`replicate` client): asynchronous jobs with logs, webhooks and cancellation;
- pre-built endpoint (E2E TIR): POST /v1/models/{model}:predict or /predict, base64 in and out;
- model catalogue (Nebius Forge): POST /v1/inference/{slug}, plus the catalogue's runtime routes
  (inference-routes, run-estimate, reliability, model-family status/start/stop);
- OpenAI-style: POST /v1/video/generations, answering a URL into the gateway's store and/or base64;
- OpenAI's Videos API (`openai` SDK), Stability AI's image-to-video, and fal's queue API (`fal-client`).

Each API is a folder of families/ (its models, its translation into one job spec, its router, its error shape).

Every generation is a job in one durable store (SQLite or any SQLAlchemy database; uploads and videos on
disk or in an S3-compatible bucket).
"""

from __future__ import annotations

from .settings import Settings

__all__ = ["Settings", "create_app", "server_options"]


def __getattr__(name: str):
    """create_app and server_options import FastAPI and uvicorn (the `gateway` extra) when first asked for:
    `svd-triton`'s thin-client CLI builds the gateway's flags from `svd_gateway.settings` without them."""
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "server_options":
        from .header_deadline import server_options

        return server_options
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
