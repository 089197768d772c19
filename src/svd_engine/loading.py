"""Devices, dtypes and loading an SVD pipeline from one source string (svd_engine.sources resolves it)."""

from __future__ import annotations

import logging

import torch

from .pipeline import EnginePipeline
from .sources import load_diffusers
from .testing import SVD_BUILT_IN
from .weights import SERVED_PIPELINES

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def is_half(dtype: torch.dtype) -> bool:
    return dtype in (torch.float16, torch.bfloat16)


def load_pipeline(source: str, *, device: torch.device, dtype: torch.dtype) -> EnginePipeline:
    """Load weights (safetensors only, never remote code) and move them to `device` in `dtype`."""
    pipeline = load_diffusers(
        EnginePipeline,
        source,
        dtype=dtype,
        half=is_half(dtype),
        served=SERVED_PIPELINES,
        built_in=SVD_BUILT_IN,
        device=device,
        hub_hint=f"Download it where the hub is reachable with `huggingface-cli download {source} --local-dir "
        "/models/svd-xt` (gated models need HF_TOKEN and accepted terms), then set the model source to that "
        "folder or mount it; or set HF_HOME to a cache that holds it.",
    )
    return place(pipeline, device, dtype)


def place(pipeline, device: torch.device, dtype: torch.dtype):
    """The pipeline quiet, in `dtype`, on `device`."""
    pipeline.set_progress_bar_config(disable=True)
    if pipeline.dtype != dtype:
        pipeline.to(dtype=dtype)
    return pipeline.to(device)
