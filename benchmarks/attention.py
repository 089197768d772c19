"""Each SDPA kernel at the attention shapes of a real SVD UNet call: which kernel to pin, per kind.

    python -m benchmarks.attention                  # CPU smoke: tiny model, 128×128, 8 frames
    python -m benchmarks.attention --size xt        # CUDA: SVD-XT architecture, 1024×576, 25 frames

Records every scaled_dot_product_attention call of one UNet forward pass at the request shape
(classifier-free guidance batch of 2) and of one VAE decode of a chunk, grouped by kind: the UNet's
`spatial` and `temporal` attention (the engine's `spatial_attention` and `temporal_attention`
switches) and `vae` (always PyTorch's pick, shown for reference). Then times each kernel on each
recorded shape. Far cheaper than compiling the whole model once per kernel; confirm the pick end to
end with `python -m benchmarks.fast_path --set spatial_attention=...`.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

from benchmarks.fast_path import SIZES
from benchmarks.report import markdown_table, write_section

from diffusers.models.attention_processor import Attention

from svd_engine.fast_path import SDPA_KERNELS, attention_kind
from svd_engine.loading import load_pipeline, resolve_device, resolve_dtype

KERNELS = ["auto", *SDPA_KERNELS]
KINDS = ("spatial", "temporal", "vae")
Shape = tuple[tuple[int, ...], tuple[int, ...]]
"""Query and key shapes, (batch, heads, length, head dim) each."""


def record_attention(pipeline, width: int, height: int, frames: int, chunk: int) -> dict[str, Counter]:
    """Shapes of the SDPA calls, by kind, in one UNet forward pass and one VAE decode of `chunk` frames."""
    calls = {kind: Counter() for kind in KINDS}
    current: list[str] = []
    modules = [(f"unet.{name}", module) for name, module in pipeline.unet.named_modules()]
    modules += [(f"vae.{name}", module) for name, module in pipeline.vae.named_modules()]
    hooks = []
    for name, module in modules:
        if isinstance(module, Attention):
            kind = "vae" if name.startswith("vae.") else attention_kind(name)
            hooks.append(module.register_forward_pre_hook(lambda *_, kind=kind: current.append(kind)))
            hooks.append(module.register_forward_hook(lambda *_: current.pop() and None))  # None keeps the output
    original = F.scaled_dot_product_attention

    def recording(query, key, value, *args, **kwargs):
        calls[current[-1]][(tuple(query.shape), tuple(key.shape))] += 1
        return original(query, key, value, *args, **kwargs)

    unet, vae, device, dtype = pipeline.unet, pipeline.vae, pipeline.device, pipeline.dtype
    latent = (height // pipeline.vae_scale_factor, width // pipeline.vae_scale_factor)
    F.scaled_dot_product_attention = recording
    try:
        with torch.inference_mode():
            unet(torch.randn(2, frames, unet.config.in_channels, *latent, device=device, dtype=dtype),
                 torch.tensor(1.0, device=device),
                 encoder_hidden_states=torch.randn(2, 1, unet.config.cross_attention_dim, device=device, dtype=dtype),
                 added_time_ids=torch.randn(2, 3, device=device, dtype=dtype), return_dict=False)
            vae.decode(torch.randn(chunk, vae.config.latent_channels, *latent, device=device, dtype=dtype), num_frames=chunk)
    finally:
        F.scaled_dot_product_attention = original
        for hook in hooks:
            hook.remove()
    return calls


def time_kernel(kernel: str, shape: Shape, device: torch.device, dtype: torch.dtype, repeats: int) -> float | str:
    """Median seconds of one SDPA call with only `kernel` allowed, or why it cannot run."""
    (batch, heads, length, dim), key_shape = shape
    query = torch.randn(batch, heads, length, dim, device=device, dtype=dtype)
    key, value = (torch.randn(key_shape, device=device, dtype=dtype) for _ in range(2))
    allowed = contextlib.nullcontext() if kernel == "auto" else sdpa_kernel(SDPA_KERNELS[kernel])
    times = []
    try:
        with allowed, torch.inference_mode():
            for _ in range(repeats + 1):
                started = time.perf_counter()
                F.scaled_dot_product_attention(query, key, value)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - started)
    except torch.OutOfMemoryError:
        return "out of memory"
    except RuntimeError:
        return "unsupported"
    finally:
        del query, key, value
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return statistics.median(times[1:])  # the first call warms up


def milliseconds(value: float | str) -> str:
    return f"{value * 1e3:.2f}" if isinstance(value, float) else value


def tables(calls: dict[str, Counter], timings: dict[tuple[str, Shape], float | str]) -> str:
    """Per kind: milliseconds per UNet pass (per decoded chunk for vae) for each kernel; then per shape."""
    summary = []
    for kind in KINDS:
        if not calls[kind]:  # e.g. the tiny VAE: a one-layer mid block skips its attention
            summary.append([kind, 0, 0] + ["—"] * len(KERNELS) + ["—"])
            continue
        totals = {}
        for kernel in KERNELS:
            per_shape = [timings[kernel, shape] for shape in calls[kind]]
            failed = next((t for t in per_shape if isinstance(t, str)), None)
            totals[kernel] = failed or sum(timings[kernel, shape] * count for shape, count in calls[kind].items())
        measured = {k: t for k, t in totals.items() if isinstance(t, float)}
        fastest = min(measured, key=measured.get) if measured else "—"
        summary.append([kind, sum(calls[kind].values()), len(calls[kind])] + [milliseconds(totals[k]) for k in KERNELS] + [fastest])
    details = [[kind, "×".join(map(str, query)), "×".join(map(str, key)), count]
               + [milliseconds(timings[kernel, (query, key)]) for kernel in KERNELS]
               for kind in KINDS for (query, key), count in sorted(calls[kind].items(), key=lambda item: -item[0][0][2])]
    return (markdown_table(["kind", "SDPA calls", "distinct shapes", *(f"{k} (ms)" for k in KERNELS), "fastest"], summary)
            + "\n\nPer shape (query and key: batch × heads × length × head dim), milliseconds per call:\n\n"
            + markdown_table(["kind", "query", "key", "calls", *KERNELS], details))


def main(argv: list[str] | None = None) -> dict[str, Counter]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto (float16 on CUDA, float32 on CPU), float16, bfloat16, float32")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per kernel and shape (their median)")
    parser.add_argument("--doc", type=Path, help="write the tables here instead of docs/benchmarks.md")
    args = parser.parse_args(argv)

    source, width, height, frames, _steps, chunk = SIZES[args.size]
    width, height, frames = args.width or width, args.height or height, args.frames or frames
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    calls = record_attention(load_pipeline(source, device=device, dtype=dtype), width, height, frames, min(chunk, frames))
    shapes = {shape for kind in KINDS for shape in calls[kind]}
    timings = {(kernel, shape): time_kernel(kernel, shape, device, dtype, args.repeats) for kernel in KERNELS for shape in shapes}
    text = tables(calls, timings)
    body = (f"{source} weights, {width}×{height}, {frames} frames (UNet batch 2: classifier-free guidance), "
            f"VAE decode chunk {min(chunk, frames)}, {str(dtype).removeprefix('torch.')}; median of {args.repeats} calls "
            f"per kernel and shape. Totals are per UNet pass (multiply by the steps) and per decoded chunk for vae.\n\n" + text)
    write_section(f"attention-{device.type}-{args.size}", f"SDPA kernels at SVD's attention shapes ({device.type.upper()}, {args.size})",
                  body, doc=args.doc)
    print(text)
    return calls


if __name__ == "__main__":
    main()
