"""The Triton models of the repository, and each one's input and output tensors.

An input that carries a request field is named by `tensor_name` (num_frames → NUM_FRAMES, TYPE_INT32)
and read back by `parameter_name`; each model's `auto_complete_config` declares the parameter inputs
from this module, so config.pbtxt declares only the tensors below that are not parameters.
"""

from __future__ import annotations

from .parameters import PARAMETERS, PROMPTS, TEXT_IMAGE_PARAMETERS, TEXT_TO_VIDEO_IMAGE_PARAMETERS, Parameter

SVD_MODEL, TEXT_TO_IMAGE_MODEL, TEXT_TO_VIDEO_MODEL = "svd_xt", "text_to_image", "text_to_video"
TRITON_TYPES = {int: "TYPE_INT32", float: "TYPE_FP32", str: "TYPE_STRING"}
WIDE_INTEGERS = {"seed"}
"""Integer parameters sent as TYPE_INT64 (seeds use all 63 bits)."""
NUMPY_TYPES = {
    "TYPE_INT32": "int32",
    "TYPE_INT64": "int64",
    "TYPE_FP32": "float32",
    "TYPE_STRING": "object",
    "TYPE_UINT8": "uint8",
}

IMAGE_INPUTS = {"IMAGE": "TYPE_UINT8", "IMAGE_BYTES": "TYPE_STRING"}
"""svd_xt takes exactly one: raw H×W×3 RGB, or an encoded file (PNG, JPEG, WebP, ...)."""
CONTROL_INPUT = "CONTROL"
CONTROL_ACTIONS = ("state", "prewarm", "pin", "release")
"""Keep-warm control requests: a CONTROL input and no image; the answer is STATE (JSON)."""

OUTPUTS = {
    SVD_MODEL: {
        "VIDEO": "TYPE_STRING",
        "VIDEO_FORMAT": "TYPE_STRING",
        "SEED_USED": "TYPE_INT64",
        "FRAMES": "TYPE_UINT8",
        "PROGRESS": "TYPE_STRING",
        "STATE": "TYPE_STRING",
    },
    TEXT_TO_IMAGE_MODEL: {"IMAGE": "TYPE_UINT8", "SEED_USED": "TYPE_INT64"},
    TEXT_TO_VIDEO_MODEL: {
        "VIDEO": "TYPE_STRING",
        "VIDEO_FORMAT": "TYPE_STRING",
        "SEED_USED": "TYPE_INT64",
        "IMAGE": "TYPE_UINT8",
        "PROGRESS": "TYPE_STRING",
    },
}
"""VIDEO_FORMAT names the format of VIDEO (mp4, webm, ...: svd_contract.VIDEO_FORMATS); PROGRESS carries
svd_contract.progress.Progress messages."""


def tensor_name(parameter: str) -> str:
    """The input tensor that carries a request field (num_frames → NUM_FRAMES, prompt → PROMPT)."""
    return parameter.upper()


def parameter_name(tensor: str) -> str:
    """The request field an input tensor carries: `tensor_name` read back (NUM_FRAMES → num_frames)."""
    return tensor.lower()


def triton_type(parameter: Parameter) -> str:
    return "TYPE_INT64" if parameter.name in WIDE_INTEGERS else TRITON_TYPES[parameter.kind]


def parameter_inputs(model: str) -> dict[str, Parameter]:
    """The model's inputs that carry one parameter each, by tensor name."""
    tables = {
        SVD_MODEL: (PARAMETERS,),
        TEXT_TO_IMAGE_MODEL: (TEXT_IMAGE_PARAMETERS,),
        TEXT_TO_VIDEO_MODEL: (TEXT_TO_VIDEO_IMAGE_PARAMETERS, PARAMETERS),
    }[model]
    return {tensor_name(name): p for parameters in tables for name, p in parameters.items()}


def declared_inputs(model: str) -> dict[str, str]:
    """The inputs config.pbtxt declares itself (name → data type): images, control and prompts."""
    return {
        SVD_MODEL: {**IMAGE_INPUTS, CONTROL_INPUT: "TYPE_STRING"},
        TEXT_TO_IMAGE_MODEL: {tensor_name(name): "TYPE_STRING" for name in PROMPTS},
        TEXT_TO_VIDEO_MODEL: {tensor_name(name): "TYPE_STRING" for name in PROMPTS},
    }[model]


def inputs(model: str) -> dict[str, str]:
    """Every input of the model and its data type."""
    return {**declared_inputs(model), **{name: triton_type(p) for name, p in parameter_inputs(model).items()}}
