"""fal's error bodies: a refused input as FastAPI's `{"detail": [{"loc", "msg", "type"}]}` (fal's apps are FastAPI
apps), any other error `{"detail": "<text>", "error_type"}`. fal_client raises FalClientHTTPError with `detail` as
its message and `error_type` as its error_type."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

LOCATIONS = ("query", "path", "header")
"""Where a field named `query.logs` (the gateway's spelling of a parameter) lives; any other field is the body's."""


def fal_error(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    if status != 422:
        return {"detail": message, "error_type": code}
    place, _, name = (field or "").partition(".")
    if place in LOCATIONS and name:
        loc = [place, name]
    else:
        loc = ["body"] if field in (None, "body") else ["body", field]
    return {"detail": [{"loc": loc, "msg": message.removeprefix(f"{field}: "), "type": code}]}


class FalErrorLocation(BaseModel):
    loc: list[str]
    msg: str
    type: str


class FalError(BaseModel):
    """fal's error body: `detail` a list for a refused input (422), else a text."""

    detail: str | list[FalErrorLocation]
    error_type: str | None = None
