"""Where a pipeline's weights live: on the serving device, or released (keep-warm) until the next request.

Shared by every engine (SVDEngine, TextImageEngine): `offload` moves the weights to host memory and
back in place (pinned on CUDA, so the copy back runs at full bus speed; compiled code stays valid);
`reload` drops the pipeline and loads it again.
"""

from __future__ import annotations

import ctypes
import gc
import itertools

import torch


def release_mechanism(configured: str, device: torch.device) -> str:
    """`auto`: offload on CUDA, reload on CPU (where the host is the device and offloading frees nothing)."""
    if configured != "auto":
        return configured
    return "offload" if device.type == "cuda" else "reload"


def device_name(device: torch.device) -> str:
    """The GPU's model name (`NVIDIA L40S`), or `cpu`."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def pipeline_tensors(pipeline) -> list[torch.Tensor]:
    """Every parameter and buffer of the pipeline's models, each once."""
    if pipeline is None:
        return []
    modules = [m for m in pipeline.components.values() if isinstance(m, torch.nn.Module)]
    unique = {id(t): t for m in modules for t in itertools.chain(m.parameters(), m.buffers())}
    return list(unique.values())


def bytes_on(pipeline, device: torch.device) -> int:
    """Bytes of parameters and buffers the pipeline's modules hold on `device`."""
    return sum(t.numel() * t.element_size() for t in pipeline_tensors(pipeline) if t.device == device)


def offload(pipeline, device: torch.device) -> None:
    """Move the weights to host memory in place (pinned when the device is a GPU)."""
    for tensor in pipeline_tensors(pipeline):
        tensor.data = tensor.data.to("cpu")
        if device.type == "cuda":
            tensor.data = tensor.data.pin_memory()


def bring_back(pipeline, device: torch.device) -> None:
    """Undo `offload`: the same Parameter objects, device and dtype, so torch.compile's guards still hold."""
    for tensor in pipeline_tensors(pipeline):
        tensor.data = tensor.data.to(device, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory(device: torch.device) -> None:
    """Hand freed memory back: the CUDA caching allocator's, or glibc's heap pages on CPU."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (musl, macOS): nothing to trim
        return None


_LIBC = _glibc()
