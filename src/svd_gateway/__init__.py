"""A REST gateway in front of Triton that speaks the request shapes of hosted SVD endpoints.

- Replicate predictions (`replicate` client): asynchronous jobs with logs, webhooks and cancellation;
- pre-built endpoint (E2E TIR): POST /v1/models/{model}:predict or /predict, base64 in and out;
- model catalogue (Nebius Forge): POST /v1/inference/{slug}, plus the catalogue's runtime routes
  (inference-routes, run-estimate, reliability, model-family status/start/stop: routers/forge.py);
- OpenAI-style: POST /v1/video/generations, answering a URL into the gateway's store and/or base64.

Every generation is a job in one durable store (SQLite or any SQLAlchemy database; uploads and videos on
disk or in an S3-compatible bucket).
"""
from .app import create_app
from .server import server_options
from .settings import Settings

__all__ = ["Settings", "create_app", "server_options"]
