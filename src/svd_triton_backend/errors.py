"""The one map from a request's failure to its Triton reply."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

import triton_python_backend_utils as pb_utils

from svd_contract import ERROR_CODES, INTERNAL_MESSAGE, ErrorCode, InvalidRequest
from svd_engine.errors import GenerationCancelled, OutOfMemory

if TYPE_CHECKING:
    from .replies import Replies

ERROR_KINDS: tuple[tuple[type[Exception], str], ...] = (
    (InvalidRequest, "INVALID_ARG"),
    (GenerationCancelled, "CANCELLED"),
    (OutOfMemory, "UNAVAILABLE"),
)
"""Exception class → svd_contract.ERROR_CODES entry, first isinstance match wins; anything else is
INTERNAL with a generic message, the traceback going to the server log only."""


def error_reply(error: BaseException) -> tuple[ErrorCode, str]:
    """(ErrorCode, client message) for a request that ended with `error`."""
    for kind, name in ERROR_KINDS:
        if isinstance(error, kind):
            code = ERROR_CODES[name]
            return code, f"{code.prefix}{error}"
    return ERROR_CODES["INTERNAL"], INTERNAL_MESSAGE


def answer_error(
    model_name: str,
    replies: Replies,
    position: int,
    error: BaseException,
    count: Callable[[str], object] = lambda outcome: None,
) -> None:
    """The final reply for a request that ended with `error`; never raises. `count` gets the metrics
    outcome. INTERNAL errors log their traceback; the client gets a generic message."""
    code, message = error_reply(error)
    try:
        if code.name == "INTERNAL":
            pb_utils.Logger.log_error(
                f"{model_name}: request {replies.request_id(position)} failed\n"
                + "".join(traceback.format_exception(error))
            )
        elif code.name != "INVALID_ARG":
            pb_utils.Logger.log_info(f"{model_name}: request {replies.request_id(position)} {message}")
        count(code.outcome)
        replies.error(position, message, getattr(pb_utils.TritonError, code.name))
    except Exception:
        pb_utils.Logger.log_error(f"{model_name}: could not answer request {position}\n{traceback.format_exc()}")
