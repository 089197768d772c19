"""svd_contract: what a request may contain and how it travels, written once; no dependencies beyond the
standard library.

The engine validates with it, the Triton models declare their tensors from it and write their progress
messages with it, and the client, CLI, gateway, playground and tests read it (tensor names, progress
messages, the deployment's defaults and limits), so a new parameter is added here and nowhere else but
the engine code that uses it.
"""

from .deployment import Deployment
from .errors import ERROR_CODES, INTERNAL_MESSAGE, ErrorCode, InvalidRequest, split_field
from .formats import EXTENSION_FORMATS, MIME_TYPES, VIDEO_FORMATS, VideoFormat
from .locations import S3Location, is_s3_url
from .parameters import (
    FIXED_DEFAULTS,
    LOOPS,
    MAX_SEED,
    MAX_SIDE,
    PARAMETERS,
    PRESETS,
    PROMPTS,
    RESIZE_MODES,
    TEXT_IMAGE_PARAMETERS,
    TEXT_TO_VIDEO_IMAGE_PARAMETERS,
    Parameter,
)
from .progress import Progress

__all__ = [
    "Deployment",
    "ERROR_CODES",
    "EXTENSION_FORMATS",
    "ErrorCode",
    "FIXED_DEFAULTS",
    "INTERNAL_MESSAGE",
    "InvalidRequest",
    "LOOPS",
    "MAX_SEED",
    "MAX_SIDE",
    "MIME_TYPES",
    "PARAMETERS",
    "PRESETS",
    "PROMPTS",
    "Parameter",
    "Progress",
    "RESIZE_MODES",
    "S3Location",
    "TEXT_IMAGE_PARAMETERS",
    "TEXT_TO_VIDEO_IMAGE_PARAMETERS",
    "VIDEO_FORMATS",
    "VideoFormat",
    "is_s3_url",
    "split_field",
]
