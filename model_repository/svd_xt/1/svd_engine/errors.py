"""The engine's error hierarchy; the Triton adapter maps each class to one protocol status.

Every error the engine raises on purpose derives from `EngineError`. Per-request failures reach the
caller as exceptions: raised by `parse`, or set on the request's Future by `submit`.
"""


class EngineError(Exception):
    """Base class for every error the engine raises on purpose."""


class InvalidRequest(EngineError, ValueError):
    """A request field is missing, malformed or out of range (Triton: INVALID_ARG).

    The message names the field, the value and what is accepted; it never contains paths or
    tracebacks, so it can be returned to the client as is.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


class ModelLoadError(EngineError, RuntimeError):
    """The weights could not be found or loaded; the message says how to get them."""


class GenerationCancelled(EngineError):
    """The client gave up; its work was abandoned (Triton: CANCELLED)."""


class OutOfMemory(EngineError):
    """The device ran out of memory for this request even when run alone (Triton: UNAVAILABLE)."""


class VideoEncodingError(EngineError, RuntimeError):
    """ffmpeg failed: an internal error, not the client's (Triton: INTERNAL, details in the server log)."""
