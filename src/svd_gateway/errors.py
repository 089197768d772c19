"""Errors as JSON, one handler per exception type, each body in its API family's shape (chosen by path).

The house shape is `{"error": {"code", "message", "field"?}}` plus RFC 7807's `title`, `detail` and
`status`, which the `replicate` client reads into `ReplicateError`. OpenAI's Videos API answers
`{"error": {"message", "type", "param", "code"}}` (the `openai` SDK raises its typed errors from it);
Stability AI's `{"id", "name", "errors": [...]}`.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match

from svd_triton.errors import (DeadlineExceededError, InvalidRequestError, RequestCancelledError, SVDClientError,
                      UnauthorizedError, UnavailableError)

STATUS_CODES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                408: "timeout", 413: "too_large", 422: "invalid_input", 503: "unavailable", 504: "deadline_exceeded"}
# Model client errors (most specific first) → the error code a job records and the HTTP status it maps to.
CLIENT_ERRORS = [
    (DeadlineExceededError, "deadline_exceeded"),
    (InvalidRequestError, "invalid_request"),
    (UnauthorizedError, "unauthorized"),
    (UnavailableError, "unavailable"),
    (RequestCancelledError, "canceled"),
    (SVDClientError, "server_error"),
]
CODE_STATUS = {"deadline_exceeded": 504, "invalid_request": 400, "unauthorized": 502, "unavailable": 503,
               "canceled": 409, "server_error": 502, "interrupted": 503}
# Routes of the Replicate API answer 422 for invalid input, as Replicate does; the older shapes 400.
UNPROCESSABLE_PREFIXES = ("/v1/predictions", "/v1/models/")
FORGE_TAG = "Nebius Forge"
"""Forge's catalogue routes (routers/forge.py) live under /v1/models/ too, and answer 400 as Forge does."""


class GatewayError(HTTPException):
    """An error the client caused or should know about; `field` names the offending request field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(status, message)
        self.code, self.field = code, field


def client_error_code(error: SVDClientError) -> str:
    return next(code for kind, code in CLIENT_ERRORS if isinstance(error, kind))


def house_error(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    error = {"code": code, "message": message, **({"field": field} if field else {})}
    return {"error": error, "title": code.replace("_", " "), "detail": message, "status": status}


def openai_error(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    if field and field.startswith(("query.", "path.", "header.")):  # OpenAI names parameters alone
        field = field.split(".", 1)[1]
    return {"error": {"message": message, "type": kind, "param": field,
                      "code": "invalid_api_key" if status == 401 else code}}


STABILITY_NAMES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                   408: "timeout", 413: "payload_too_large", 422: "invalid_request", 503: "unavailable"}


def stability_error(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    """Stability's errors carry an id of their own (for support requests), a name and the messages."""
    return {"id": uuid.uuid4().hex, "name": STABILITY_NAMES.get(status, "internal_error"), "errors": [message]}


class HouseErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class HouseError(BaseModel):
    """The house error body (Replicate, E2E TIR, Nebius Forge, OpenAI-style generations, files)."""

    error: HouseErrorDetail
    title: str
    detail: str
    status: int


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIError(BaseModel):
    """OpenAI's error body (the Videos API)."""

    error: OpenAIErrorDetail


class StabilityError(BaseModel):
    """Stability AI's error body (v2beta image-to-video)."""

    id: str
    name: str
    errors: list[str]


ERROR_DESCRIPTIONS = {
    400: "A field malformed or out of range, named in the error", 401: "A missing or wrong bearer token",
    404: "No such resource", 408: "The request body did not arrive in time", 409: "A conflict with the job's state",
    413: "The request body is over the gateway's limit", 422: "Invalid input, the field named in the error",
    500: "The generation failed on the server", 502: "The model server failed the request",
    503: "The model is not available", 504: "The generation ran past its deadline",
    "4XX": "Any other client error (e.g. 405, with the methods allowed in `Allow`)"}
GUARDED = (401, 408, 413)
"""What the guard (guard.py) may answer on any route behind the token."""
GENERATION = (409, 502, 503, 504)
"""What a synchronous generation may end with besides a refused input (CODE_STATUS)."""


def error_responses(body: type[BaseModel], *statuses: int) -> dict:
    """OpenAPI `responses` for a route's errors: each status with its family's body, and 4XX for the rest."""
    return {status: {"model": body, "description": ERROR_DESCRIPTIONS[status]} for status in (*statuses, "4XX")}


@dataclass(frozen=True)
class ErrorShape:
    """One API family's error body: render(status, code, message, field)."""

    prefixes: tuple[str, ...]
    render: Callable[[int, str, str, str | None], dict[str, Any]]


SHAPES = (ErrorShape(("/v1/videos",), openai_error), ErrorShape(("/v2beta/",), stability_error))
"""Families with an error shape of their own; every other path answers in the house shape."""


def shape_for(path: str) -> ErrorShape | None:
    return next((shape for shape in SHAPES if path.startswith(shape.prefixes)), None)


def error_response(status: int, code: str, message: str, field: str | None = None, headers=None,
                   path: str = "") -> JSONResponse:
    shape = shape_for(path)
    body = (shape.render if shape else house_error)(status, code, message, field)
    return JSONResponse(body, status_code=status, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this request's path."""
    methods = set()
    for route in request.app.router.routes:
        if getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return sorted(methods)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        code = getattr(error, "code", None) or STATUS_CODES.get(error.status_code, "error")
        headers = error.headers
        if error.status_code == 405:  # Starlette's Allow names one route's methods; a path may have several
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(error.status_code, code, str(error.detail), getattr(error, "field", None), headers,
                              request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        field_name = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        if first["type"] == "extra_forbidden":
            unknown = sorted(".".join(str(p) for p in e["loc"] if p != "body") for e in error.errors()
                             if e["type"] == "extra_forbidden")
            message = f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown[:20])}"
        elif first["type"] == "json_invalid":
            message = "body: not valid JSON"
        else:
            message = f"{field_name}: {first['msg']}"
        forge = FORGE_TAG in getattr(request.scope.get("route"), "tags", ())
        status = 422 if request.url.path.startswith(UNPROCESSABLE_PREFIXES) and not forge else 400
        return error_response(status, "invalid_request" if status == 400 else "invalid_input", message, field_name,
                              path=request.url.path)
