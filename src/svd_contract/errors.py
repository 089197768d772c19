"""Error codes every layer shares, and the one error a bad request field raises.

A refused request travels as a Triton error (code + message) and, through the gateway, as each API
family's HTTP error. The message of an INVALID_ARG error always starts with the field's name and a
colon (`num_frames: num_frames=99 is out of range; accepted: ...`), so every reader recovers the field
with `split_field` instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass


class InvalidRequest(ValueError):
    """A request field is missing, malformed or out of range (Triton INVALID_ARG, HTTP 400).

    The message names the field, the value and what is accepted; it never contains paths or tracebacks,
    so it can be returned to the client as is.
    """

    code = "INVALID_ARG"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


@dataclass(frozen=True)
class ErrorCode:
    """One outcome a request can end with besides success."""

    name: str
    """The Triton error code name (pb_utils.TritonError.<name>)."""
    outcome: str
    """The label of the model's svd_requests_total counter."""
    prefix: str = ""
    """What the model's error message starts with (INVALID_ARG: the field name instead)."""


ERROR_CODES: dict[str, ErrorCode] = {
    c.name: c
    for c in (
        ErrorCode("INVALID_ARG", "invalid"),
        ErrorCode("CANCELLED", "cancelled", "request cancelled: "),
        ErrorCode("UNAVAILABLE", "failed", "not enough memory: "),
        ErrorCode("INTERNAL", "failed"),
    )
}
INTERNAL_MESSAGE = "generation failed; the server log has the details"
"""The whole message of an INTERNAL error: the details stay in the server log."""


def split_field(message: str, fields) -> tuple[str | None, str]:
    """(field, detail) of an INVALID_ARG message; (None, message) when it names none of `fields`."""
    field, sep, detail = message.partition(":")
    if sep and field.strip() in fields:
        return field.strip(), detail.strip()
    return None, message
