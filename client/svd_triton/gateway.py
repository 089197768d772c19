"""A REST gateway that speaks the request shapes of hosted SVD endpoints, in front of Triton.

Three shapes, each reachable by changing only a client's base URL and token:

- pre-built endpoint (E2E TIR): POST /v1/models/{model}:predict (or /predict) with
  {"image": base64, "fps": 10, ...}; answers {"predictions": base64 video}, AVI unless asked otherwise;
- model catalogue (Nebius Forge): POST /v1/inference/{slug} with {"image": data URI, ...}, plus the
  catalogue's runtime routes (inference-routes, run-estimate, reliability, status, start, stop: forge.py);
- OpenAI-style: POST /v1/video/generations, answering {"created", "data": [{"url", "b64_json"}]}; the url
  points into this gateway's own bounded, expiring store (it never fetches URLs given by clients).

Parameters map onto the model's inputs through PARAMETER_MAP; the model enforces every limit.
"""
from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from .client import AsyncSVDClient, sniff_format
from .forge import ForgeSettings, TritonForgeBackend, mount_forge, pin_warnings
from .errors import (DeadlineExceededError, InvalidRequestError, SVDClientError, UnauthorizedError,
                     UnavailableError)

# Request field → model parameter. Fields in IGNORED_FIELDS are accepted and reported, not used.
PARAMETER_MAP = {
    "fps": "fps", "seed": "seed", "width": "width", "height": "height", "num_frames": "num_frames",
    "num_inference_steps": "num_inference_steps", "motion_bucket_id": "motion_bucket_id",
    "noise_aug_strength": "noise_aug_strength", "min_guidance_scale": "min_guidance_scale",
    "max_guidance_scale": "max_guidance_scale", "guidance_scale": "max_guidance_scale",
    "decode_chunk_size": "decode_chunk_size", "resize_mode": "resize_mode", "video_format": "video_format",
    "video_quality": "video_quality",
}
IGNORED_FIELDS = {
    "prompt": "an image-to-video model takes no prompt; it was ignored",
    "negative_prompt": "an image-to-video model takes no prompt; it was ignored",
}
FORGE_PINS = ("model_version", "gpu_type", "region")
"""Forge body fields naming a target: a mismatch is a warning (forge.pin_warnings), never a refusal."""
MIME_TYPES = {"mp4": "video/mp4", "avi": "video/x-msvideo", "webm": "video/webm", "gif": "image/gif",
              "webp": "image/webp", "frames": "application/x-npy"}
DATA_URI = re.compile(r"^data:image/[\w.+-]+;base64,", re.I)


class _Body(BaseModel):
    """Fields shared by the three shapes; unknown fields are refused (400, naming them)."""

    model_config = ConfigDict(extra="forbid")
    image: str
    fps: int | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    num_inference_steps: int | None = None
    motion_bucket_id: int | None = None
    noise_aug_strength: float | None = None
    min_guidance_scale: float | None = None
    max_guidance_scale: float | None = None
    decode_chunk_size: int | None = None
    resize_mode: str | None = None
    video_format: str | None = None
    video_quality: int | None = None


class PredictRequest(_Body):
    """E2E TIR pre-built endpoint: a base64 image and optional SVD parameters."""


class _CatalogueBody(_Body):
    """Fields that catalogue-style APIs send beside the SVD parameters."""

    model: str | None = None
    guidance_scale: float | None = None
    prompt: str | None = None


class ForgeRequest(_CatalogueBody):
    """Nebius Forge model catalogue: a data-URI image; prompt and model fields accepted and reported."""

    negative_prompt: str | None = None
    model_version: str | None = None
    gpu_type: str | None = None
    region: str | None = None


class VideoGenerationRequest(_CatalogueBody):
    """OpenAI-style video generations."""

    response_format: str | None = None
    """`url`, `b64_json`, or unset for both."""


class GatewayError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.field = status, code, field


ERROR_STATUS = [  # most specific first
    (DeadlineExceededError, 504, "deadline_exceeded"),
    (InvalidRequestError, 400, "invalid_request"),
    (UnauthorizedError, 401, "unauthorized"),
    (UnavailableError, 503, "unavailable"),
    (SVDClientError, 502, "server_error"),
]


@dataclass
class Settings:
    triton_url: str = "localhost:8001"
    """Triton's gRPC address."""
    token: str | None = None
    """Required from clients as a bearer token, and sent on to Triton."""
    metrics_url: str | None = None
    """Triton's metrics endpoint (default: the Triton host, port 8002)."""
    public_url: str | None = None
    """Base URL for stored-video links (default: the URL the request came in on)."""
    timeout: float = 900.0
    max_body_bytes: int = 32 * 1024 * 1024
    store_seconds: float = 3600.0
    store_items: int = 64
    forge: ForgeSettings = field(default_factory=ForgeSettings)


class VideoStore:
    """The last `items` videos for `seconds`, in memory; older ones are dropped."""

    def __init__(self, items: int, seconds: float):
        self.items, self.seconds = items, seconds
        self._videos: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def put(self, video: bytes) -> str:
        self._expire()
        key = secrets.token_urlsafe(16)
        self._videos[key] = (time.monotonic() + self.seconds, video)
        while len(self._videos) > self.items:
            self._videos.popitem(last=False)
        return key

    def get(self, key: str) -> bytes | None:
        self._expire()
        entry = self._videos.get(key)
        return entry[1] if entry else None

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (deadline, _) in self._videos.items() if deadline < now]:
            del self._videos[key]


def decode_image(value: str) -> bytes:
    if value.startswith(("http://", "https://")):
        raise GatewayError(400, "invalid_request", "image: URLs are not fetched; send the image as base64 or a data URI", "image")
    try:
        return base64.b64decode(DATA_URI.sub("", value.strip()), validate=True)
    except (binascii.Error, ValueError):
        raise GatewayError(400, "invalid_request", "image: not valid base64 (or a data:image/...;base64, URI)", "image") from None


def model_parameters(body: _Body, defaults: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The model's parameters from a request body (PARAMETER_MAP), and warnings for ignored fields."""
    given = body.model_dump(exclude_none=True, exclude={"image", "model", "response_format", *FORGE_PINS})
    params, warnings = dict(defaults), []
    for field_name, value in given.items():
        if field_name in IGNORED_FIELDS:
            warnings.append(IGNORED_FIELDS[field_name])
        else:
            params[PARAMETER_MAP[field_name]] = value
    return params, warnings


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="svd-triton gateway", version="0.1.0",
                  description="Hosted-SVD-compatible REST routes in front of a Triton svd_xt deployment.")
    store = VideoStore(settings.store_items, settings.store_seconds)
    metrics_url = settings.metrics_url or f"http://{settings.triton_url.rsplit(':', 1)[0]}:8002/metrics"

    def svd() -> AsyncSVDClient:
        return AsyncSVDClient(settings.triton_url, protocol="grpc", token=settings.token, timeout=settings.timeout)

    async def authorised(request: Request) -> None:
        if settings.token and request.headers.get("authorization", "") != f"Bearer {settings.token}":
            raise GatewayError(401, "unauthorized", "missing or wrong bearer token")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        declared = request.headers.get("content-length")
        if declared is not None and int(declared) > settings.max_body_bytes:
            return _error(GatewayError(413, "too_large", f"request body over {settings.max_body_bytes} bytes"))
        return await call_next(request)

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, error: GatewayError):
        return _error(error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        field_name = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        reason = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        return _error(GatewayError(400, "invalid_request", f"{field_name}: {reason}", field_name))

    forge_backend = TritonForgeBackend(settings.triton_url, metrics_url, settings.token, settings.timeout)
    mount_forge(app, settings.forge, forge_backend, authorised)

    async def generate(body: _Body, defaults: dict[str, Any]):
        image = decode_image(body.image)
        params, warnings = model_parameters(body, defaults)
        async with svd() as client:
            try:
                return await client.generate(image, **params), warnings
            except SVDClientError as error:
                status, code = next((s, c) for kind, s, c in ERROR_STATUS if isinstance(error, kind))
                raise GatewayError(status, code, str(error)) from None

    @app.post("/v1/models/{model}:predict", dependencies=[Depends(authorised)], tags=["E2E TIR"])
    @app.post("/predict", dependencies=[Depends(authorised)], tags=["E2E TIR"])
    async def predict(body: PredictRequest):
        result, _ = await generate(body, {"video_format": "avi"})
        return {"predictions": base64.b64encode(result.video).decode()}

    @app.post("/v1/inference/{slug}", dependencies=[Depends(authorised)], tags=["Nebius Forge"])
    async def forge(slug: str, body: ForgeRequest):
        if slug != settings.forge.slug:
            raise GatewayError(404, "not_found", f"unknown model {slug!r}; this deployment serves {settings.forge.slug!r}", "slug")
        result, warnings = await generate(body, {})
        warnings += await pin_warnings(settings.forge, forge_backend, **body.model_dump(include=set(FORGE_PINS)))
        return {"model": slug, "video": base64.b64encode(result.video).decode(), "format": result.video_format,
                "mime_type": MIME_TYPES.get(result.video_format), "seed": result.seed,
                "seconds": round(result.seconds, 3), "warnings": warnings}

    @app.post("/v1/video/generations", dependencies=[Depends(authorised)], tags=["OpenAI-style"])
    async def video_generations(body: VideoGenerationRequest, request: Request):
        if body.response_format not in (None, "url", "b64_json"):
            raise GatewayError(400, "invalid_request", "response_format: accepted: url, b64_json", "response_format")
        result, warnings = await generate(body, {})
        entry: dict[str, Any] = {"revised_prompt": None}
        if body.response_format in (None, "url"):
            key = store.put(result.video)
            base = settings.public_url or str(request.base_url).rstrip("/")
            entry["url"] = f"{base}/v1/files/{key}.{result.video_format}"
        if body.response_format in (None, "b64_json"):
            entry["b64_json"] = base64.b64encode(result.video).decode()
        return {"created": int(time.time()), "data": [entry], "warnings": warnings}

    @app.get("/v1/files/{name}", tags=["OpenAI-style"])
    async def stored_video(name: str):
        """Videos made by /v1/video/generations, for `store_seconds` (the link is the credential)."""
        video = store.get(name.split(".", 1)[0])
        if video is None:
            raise GatewayError(404, "not_found", "no such video, or it has expired")
        return Response(video, media_type=MIME_TYPES.get(sniff_format(video), "application/octet-stream"))

    @app.get("/healthz", tags=["health"])
    async def health():
        async with svd() as client:
            ready = await client.ready()
        return JSONResponse({"triton_ready": ready}, status_code=200 if ready else 503)

    return app


def _error(error: GatewayError) -> JSONResponse:
    body = {"error": {"code": error.code, "message": str(error), **({"field": error.field} if error.field else {})}}
    return JSONResponse(body, status_code=error.status)

