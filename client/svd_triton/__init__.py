"""svd_triton: thin client, CLI and embedded-server launcher for the svd_xt Triton model."""
from .client import AsyncSVDClient, ProgressUpdate, SVDClient, VideoResult, sniff_format
from .errors import (InvalidRequestError, RequestCancelledError, ServerError, SVDClientError, UnauthorizedError,
                     UnavailableError)

__all__ = [
    "AsyncSVDClient", "InvalidRequestError", "ProgressUpdate", "RequestCancelledError", "SVDClient", "SVDClientError", "ServerError",
    "UnauthorizedError", "UnavailableError", "VideoResult", "sniff_format",
]
