"""Errors as JSON, one handler per exception type, each body in its API family's shape.

The house shape is `{"error": {"code", "message", "field"?}}` plus RFC 7807's `title`, `detail` and
`status`, which the `replicate` client reads into `ReplicateError`. A family with a shape of its own (OpenAI's
Videos API, Stability, fal) builds its router with `family_router(render_error=...)`: its routes carry the
renderer, so an error raised on them is rendered by it. What is answered before a route is chosen (the guard's
401, 408 and 413; an unknown path) takes the shape of the family whose path prefix it has (`ErrorShapes`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match

from svd_triton.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    RequestCancelledError,
    SVDClientError,
    UnauthorizedError,
    UnavailableError,
)

from .accounts import QuotaExceeded

STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "too_large",
    422: "invalid_input",
    503: "unavailable",
    504: "deadline_exceeded",
}
# Model client errors (most specific first) → the error code a job records and the HTTP status it maps to.
CLIENT_ERRORS = [
    (DeadlineExceededError, "deadline_exceeded"),
    (InvalidRequestError, "invalid_request"),
    (UnauthorizedError, "unauthorized"),
    (UnavailableError, "unavailable"),
    (RequestCancelledError, "canceled"),
    (SVDClientError, "server_error"),
]
CODE_STATUS: dict[str | None, int] = {  # looked up by a job's error_code, which is None until it fails
    "deadline_exceeded": 504,
    "invalid_request": 400,
    "unauthorized": 502,
    "unavailable": 503,
    "canceled": 409,
    "server_error": 502,
    "interrupted": 503,
}


class GatewayError(HTTPException):
    """An error the client caused or should know about; `field` names the offending request field."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(status, message, headers)
        self.code, self.field = code, field


def client_error_code(error: SVDClientError) -> str:
    return next(code for kind, code in CLIENT_ERRORS if isinstance(error, kind))


def house_error(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    error = {"code": code, "message": message, **({"field": field} if field else {})}
    return {"error": error, "title": code.replace("_", " "), "detail": message, "status": status}


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


ERROR_DESCRIPTIONS = {
    400: "A field malformed or out of range, named in the error",
    401: "A missing, wrong, revoked or expired API key",
    403: "The API key lacks the scope this route needs",
    404: "No such resource",
    408: "The request body did not arrive in time",
    409: "A conflict with the job's state",
    413: "The request body is over the gateway's limit",
    429: "The API key's rate or active-job limit; `Retry-After` says when to try again",
    422: "Invalid input, the field named in the error",
    500: "The generation failed on the server",
    502: "The model server failed the request",
    503: "The model is not available",
    504: "The generation ran past its deadline",
    "4XX": "Any other client error (e.g. 405, with the methods allowed in `Allow`)",
}
GUARDED = (401, 408, 413)
"""What the guard (guard.py) may answer on any route behind the token."""
GENERATION = (409, 502, 503, 504)
"""What a synchronous generation may end with besides a refused input (CODE_STATUS)."""


def error_responses(body: type[BaseModel], *statuses: int) -> dict:
    """OpenAPI `responses` for a route's errors: each status with its family's body, and 4XX for the rest."""
    return {status: {"model": body, "description": ERROR_DESCRIPTIONS[status]} for status in (*statuses, "4XX")}


Renderer = Callable[[int, str, str, str | None], dict[str, Any]]
"""An API family's error body: render(status, code, message, field)."""


class FamilyRoute(APIRoute):
    """A route of one API family: its errors in the family's shape, an invalid body answered `invalid_status`."""

    render_error: Renderer = staticmethod(house_error)
    invalid_status: int = 400


def family_router(render_error: Renderer = house_error, invalid_status: int = 400, **options: Any) -> APIRouter:
    """An APIRouter whose routes render errors with `render_error` and refuse an invalid body with
    `invalid_status` (Replicate and fal answer 422, the older shapes 400)."""
    route = type(
        "FamilyRoute", (FamilyRoute,), {"render_error": staticmethod(render_error), "invalid_status": invalid_status}
    )
    return APIRouter(route_class=route, **options)


@dataclass(frozen=True)
class ErrorShapes:
    """The shape of an error answered before a route is chosen: the family's whose path prefix it has, else the
    house shape."""

    by_prefix: tuple[tuple[tuple[str, ...], Renderer], ...] = ()

    def for_path(self, path: str) -> Renderer:
        return next((render for prefixes, render in self.by_prefix if path.startswith(prefixes)), house_error)


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers=None, render: Renderer = house_error
) -> JSONResponse:
    return JSONResponse(render(status, code, message, field), status_code=status, headers=headers)


def route_renderer(request: Request) -> tuple[Renderer, int]:
    """The renderer and invalid-body status of the route that answers `request` (the shape by path without one)."""
    route = request.scope.get("route")
    if isinstance(route, FamilyRoute):
        return route.render_error, route.invalid_status
    return request.app.state.error_shapes.for_path(request.url.path), 400


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this request's path (the families' routers are included without a
    prefix; FastAPI keeps each as one entry whose `original_router` holds its routes)."""
    exact: set[str] = set()
    templated: set[str] = set()
    pending = list(request.app.router.routes)
    while pending:
        route = pending.pop()
        if hasattr(route, "original_router"):
            pending.extend(route.original_router.routes)
        elif getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE:
            (templated if route.param_convertors else exact).update(route.methods)
    # A path spelled out by a route (/v1/videos/extensions) is that route's, not also a template's (/v1/videos/{id}).
    return sorted(exact or templated)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        code = getattr(error, "code", None) or STATUS_CODES.get(error.status_code, "error")
        headers = error.headers
        if error.status_code == 405:  # Starlette's Allow names one route's methods; a path may have several
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        render, _ = route_renderer(request)
        return error_response(
            error.status_code, code, str(error.detail), getattr(error, "field", None), headers, render
        )

    @app.exception_handler(QuotaExceeded)
    async def quota_exceeded(request: Request, error: QuotaExceeded):
        render, _ = route_renderer(request)
        return error_response(
            429, "rate_limit_exceeded", str(error), headers={"Retry-After": str(error.retry_after)}, render=render
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        field_name = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        if first["type"] == "extra_forbidden":
            unknown = sorted(
                ".".join(str(p) for p in e["loc"] if p != "body")
                for e in error.errors()
                if e["type"] == "extra_forbidden"
            )
            message = f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown[:20])}"
        elif first["type"] == "json_invalid":
            message = "body: not valid JSON"
        else:
            message = f"{field_name}: {first['msg']}"
        render, status = route_renderer(request)
        return error_response(
            status, "invalid_request" if status == 400 else "invalid_input", message, field_name, render=render
        )
