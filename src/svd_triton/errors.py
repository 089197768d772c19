"""What can go wrong when calling the server, as a small hierarchy with the server's message, and the
one map from tritonclient's and the transport's exceptions onto it (`map_error`).

Every error carries `code`, the Triton error code name it came with (INVALID_ARG, UNAVAILABLE,
CANCELLED, DEADLINE_EXCEEDED, UNAUTHENTICATED, PERMISSION_DENIED, INTERNAL, ...; its class's own
where the server named none), and `field`, the request field its message names (`num_frames`,
read back from the input NUM_FRAMES) or None. Both are read once, here, so no caller parses messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol, cast

from svd_contract import ERROR_CODES, split_field
from svd_contract.tensors import parameter_name


class SVDClientError(Exception):
    """Base class; `str(error)` is the server's (or transport's) message."""

    code = "UNKNOWN"

    def __init__(self, message: str = "", *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        self.code = code or type(self).code
        self.field = field

    def __init_subclass__(cls, code: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.code = code or cls.code


class InvalidRequestError(SVDClientError, code="INVALID_ARG"):
    """The request was refused as invalid (INVALID_ARG / HTTP 400); `field` names the field."""


class UnauthorizedError(SVDClientError, code="UNAUTHENTICATED"):
    """No token or a wrong token for a server that requires one."""


class UnavailableError(SVDClientError, code="UNAVAILABLE"):
    """The server cannot be reached, is not ready, or did not answer in time."""


class ServerError(SVDClientError, code="INTERNAL"):
    """The server failed while handling a valid request."""


class RequestCancelledError(SVDClientError, code="CANCELLED"):
    """The request was cancelled before it finished (by this client or on the server)."""


class DeadlineExceededError(UnavailableError, code="DEADLINE_EXCEEDED"):
    """No answer within the client's timeout (the request is cancelled on the server over gRPC)."""


HTTP_CODES = {
    "400": "INVALID_ARG",
    "401": "UNAUTHENTICATED",
    "403": "PERMISSION_DENIED",
    "404": "NOT_FOUND",
    "500": "INTERNAL",
    "503": "UNAVAILABLE",
    "504": "DEADLINE_EXCEEDED",
}
"""Triton's HTTP statuses → the Triton error code name they stand for."""
GRPC_CODES = {"INVALID_ARGUMENT": "INVALID_ARG"}
"""gRPC status names that Triton spells otherwise; every other name is the same in both."""
DECISIONS: tuple[tuple[type[SVDClientError], set[str], tuple[str, ...]], ...] = (
    (UnauthorizedError, {"UNAUTHENTICATED", "PERMISSION_DENIED"}, ("restricted",)),
    (InvalidRequestError, {"INVALID_ARG"}, ()),
    (UnavailableError, set(), ("unknown model", "no available versions")),  # unloaded (cold) or absent
    (RequestCancelledError, {"CANCELLED"}, ()),
    (DeadlineExceededError, {"DEADLINE_EXCEEDED"}, ()),
    (UnavailableError, {"UNAVAILABLE"}, ()),
)
"""A server error's class: the first row whose codes hold the error's code, or one of whose phrases its
message contains; ServerError when none does."""


OUT_OF_MEMORY = ERROR_CODES["UNAVAILABLE"].prefix
"""How the model says a request does not fit the device's memory even alone (svd_contract.errors)."""
MODEL_PROCESS_DIED = "is not healthy"
"""What Triton answers the calls in flight when a model's Python-backend process died (killed, out of host memory,
a native crash): "Stub process 'svd_xt_0_0' is not healthy."."""
TRANSIENT_PHRASES = (
    MODEL_PROCESS_DIED,
    "Stream removed",  # the server went away mid-call
    "Socket closed",
    "Connection reset",
    "failed to connect to all addresses",
)
"""What a server error says when it was the transport or the model's process that failed, not the request."""


NEVER_RAN_PHRASES = ("unknown model", "no available versions")
"""What an error says when the request never reached the model: no model loaded to take it (unloaded, reloading).
(A lost connection says UNAVAILABLE whether or not the call had started: that counts.)"""


def never_ran(error: SVDClientError) -> bool:
    """Whether the request certainly never ran: sending it again costs the model nothing it has not spent."""
    return isinstance(error, UnavailableError) and any(phrase in str(error) for phrase in NEVER_RAN_PHRASES)


def is_transient(error: SVDClientError) -> bool:
    """Whether the same request, sent again later, may well succeed: a fault of the transport, of the server's
    availability or of the model's process. Never one of the request itself (invalid, unauthorized, cancelled), a
    deadline (the request's whole time budget, queueing included, is spent: sending it again would overrun it),
    or a request too large for the device's memory even alone (it would fail the same way again)."""
    if isinstance(error, (InvalidRequestError, UnauthorizedError, RequestCancelledError, DeadlineExceededError)):
        return False
    if OUT_OF_MEMORY in str(error):
        return False
    return isinstance(error, UnavailableError) or any(phrase in str(error) for phrase in TRANSIENT_PHRASES)


class _RpcError(Protocol):
    """What map_error reads of a grpc.RpcError (grpc is an optional dependency: the HTTP client has none)."""

    def code(self) -> Any: ...

    def details(self) -> str | None: ...


def code_name(status: Any) -> str | None:
    """The Triton code name of a tritonclient status ("400" over HTTP, "StatusCode.INVALID_ARGUMENT" over
    gRPC); None for none (an error sent on a stream) or an HTTP status without one."""
    name = str(status or "").rpartition(".")[2]
    return HTTP_CODES.get(name) if name.isdigit() else GRPC_CODES.get(name, name) or None


def _classify(code: str | None, message: str) -> tuple[type[SVDClientError], str]:
    """DECISIONS applied: the class, and its code (the class's own where the message decided)."""
    for kind, codes, phrases in DECISIONS:
        if code is not None and code in codes:
            return kind, code
        if any(phrase in message for phrase in phrases):
            return kind, kind.code
    return ServerError, code or ServerError.code


def map_error(error: Exception, inputs: Iterable[str] = ()) -> SVDClientError:
    """tritonclient's and the transport's exceptions → our hierarchy, keeping the server's message.

    `inputs` are the model's input names: a message that starts with one and a colon (svd_contract's
    INVALID_ARG shape, `NUM_FRAMES: ...`) names that field, which the error carries as `field` (num_frames).
    """
    from tritonclient.utils import InferenceServerException

    if isinstance(error, SVDClientError):
        return error
    if isinstance(error, asyncio.TimeoutError):
        return DeadlineExceededError("no answer within the client's timeout")
    if isinstance(error, OSError) and not isinstance(error, InferenceServerException):
        return UnavailableError(f"server not reachable: {error or type(error).__name__}")
    if callable(getattr(error, "code", None)) and callable(getattr(error, "details", None)):  # grpc's own RpcError
        rpc = cast(_RpcError, error)  # what the check above found, which mypy cannot follow
        status, detail = rpc.code().name, rpc.details()
        if status == "UNAVAILABLE":  # the transport's details name internal addresses: not for end users
            return UnavailableError("server not reachable (gRPC UNAVAILABLE)")
        kind, code = _classify(GRPC_CODES.get(status, status), "")  # by its code alone
        message = f"{status}: {detail}"
    else:
        server = error if isinstance(error, InferenceServerException) else None
        detail = message = (server.message() if server is not None else None) or str(error)
        kind, code = _classify(code_name(server.status() if server is not None else None), message)
    field, _ = split_field(detail or "", set(inputs))
    return kind(message, code=code, field=parameter_name(field) if field else None)
