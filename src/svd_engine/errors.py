"""The engine's error hierarchy; the Triton adapter maps each class to one protocol status.

A bad request field raises svd_contract.InvalidRequest (re-exported here), shared with every other layer.

Every error the engine raises on purpose derives from `EngineError`. Per-request failures reach the
caller as exceptions: raised by `parse`, or set on the request's Future by `submit`.
"""

from svd_contract import InvalidRequest

__all__ = [
    "EngineError",
    "GenerationCancelled",
    "InvalidRequest",
    "ModelLoadError",
    "OutOfMemory",
    "VideoEncodingError",
]


class EngineError(Exception):
    """Base class for every error the engine raises on purpose."""


class ModelLoadError(EngineError, RuntimeError):
    """The weights could not be found or loaded; the message says how to get them."""


class GenerationCancelled(EngineError):
    """The client gave up; its work was abandoned (Triton: CANCELLED)."""


class OutOfMemory(EngineError):
    """The device ran out of memory for this request even when run alone (Triton: UNAVAILABLE)."""


class VideoEncodingError(EngineError, RuntimeError):
    """ffmpeg failed: an internal error, not the client's (Triton: INTERNAL, details in the server log)."""
