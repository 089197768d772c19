"""What can go wrong when calling the server, as a small hierarchy with the server's message."""


class SVDClientError(Exception):
    """Base class; `str(error)` is the server's (or transport's) message."""


class InvalidRequestError(SVDClientError):
    """The request was refused as invalid (INVALID_ARG / HTTP 400); the message names the field."""


class UnauthorizedError(SVDClientError):
    """No token or a wrong token for a server that requires one."""


class UnavailableError(SVDClientError):
    """The server cannot be reached, is not ready, or did not answer in time."""


class ServerError(SVDClientError):
    """The server failed while handling a valid request."""


class RequestCancelledError(SVDClientError):
    """The request was cancelled before it finished (by this client or on the server)."""


class DeadlineExceededError(UnavailableError):
    """No answer within the client's timeout (the request is cancelled on the server over gRPC)."""
