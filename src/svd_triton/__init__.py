"""svd_triton: thin client, CLI and embedded-server launcher for the svd_xt Triton model."""

from .client import AsyncSVDClient, ProgressUpdate, SVDClient, VideoResult
from .errors import (
    DeadlineExceededError,
    InvalidRequestError,
    RequestCancelledError,
    ServerError,
    SVDClientError,
    UnauthorizedError,
    UnavailableError,
)

__all__ = [
    "AsyncSVDClient",
    "DeadlineExceededError",
    "InvalidRequestError",
    "ProgressUpdate",
    "RequestCancelledError",
    "SVDClient",
    "SVDClientError",
    "ServerError",
    "UnauthorizedError",
    "UnavailableError",
    "VideoResult",
]
