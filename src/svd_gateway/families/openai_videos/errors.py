"""OpenAI's error body, `{"error": {"message", "type", "param", "code"}}`: the `openai` SDK raises its typed errors
(BadRequestError, NotFoundError, AuthenticationError, ...) from it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def openai_error(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "requests" if status == 429 else "invalid_request_error"
    if field and field.startswith(("query.", "path.", "header.")):  # OpenAI names parameters alone
        field = field.split(".", 1)[1]
    return {
        "error": {
            "message": message,
            "type": kind,
            "param": field,
            "code": "invalid_api_key" if status == 401 else code,
        }
    }


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIError(BaseModel):
    """OpenAI's error body (the Videos API)."""

    error: OpenAIErrorDetail
