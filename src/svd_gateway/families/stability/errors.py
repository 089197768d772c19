"""Stability AI's error body, `{"id", "name", "errors": [...]}`."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel

STABILITY_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "payload_too_large",
    422: "invalid_request",
    429: "rate_limit_exceeded",
    503: "unavailable",
}


def stability_error(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    """Stability's errors carry an id of their own (for support requests), a name and the messages."""
    return {"id": uuid.uuid4().hex, "name": STABILITY_NAMES.get(status, "internal_error"), "errors": [message]}


class StabilityError(BaseModel):
    """Stability AI's error body (v2beta image-to-video)."""

    id: str
    name: str
    errors: list[str]
