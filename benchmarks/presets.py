"""End-to-end speed of the speed presets against stock diffusers, measured on this machine's CPU.

Times stock diffusers (25 guided Karras steps, the baseline) and the engine at each preset (quality, balanced,
fast) and at fast with cache_interval=3 (branch 0), on `random-xt` (SVD-XT's full architecture, random weights)
at a reduced size: image in, frames out (no video encoding), CPU seconds of this process and wall seconds, the
median of `--repeats` rounds after a one-step warm-up of each pipeline. Every round runs every row once, in
table order, so the machine's load drifts over all rows alike. Each row's frames are compared with the quality
row's at the same seed: random weights measure speed and numerical deviation only, not visual quality.
`benchmarks.work_table` counts the same rows' work at full size.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import time
from collections.abc import Iterator

import numpy as np

from benchmarks.feature_cache import SAMPLE, engine_run, psnr, stock_run
from benchmarks.report import markdown_table, write_section

STOCK = "stock diffusers"
ROWS: list[tuple[str, dict]] = [
    (STOCK, {"preset": "quality"}),  # the deployment's defaults: 25 steps, as stock diffusers runs them
    ("quality", {"preset": "quality"}),
    ("balanced", {"preset": "balanced"}),
    ("fast", {"preset": "fast"}),
    ("fast + cache_interval=3", {"preset": "fast", "cache_interval": 3, "cache_branch_id": 0}),
]
"""(row, request fields); the stock row runs its request's size, steps and seed through stock diffusers."""


@contextlib.contextmanager
def counted_passes(unet, num_frames: int) -> Iterator[dict[str, int]]:
    """UNet passes in batch-1 units while inside: every pass runs the input convolution, a whole one the mid
    block too (a cached step's shallow branch skips it)."""
    samples = {"all": 0, "whole": 0}

    def count(key: str):
        def hook(_module, args, kwargs):  # returns None: a pre-hook's return value would replace the inputs
            hidden_states = args[0] if args else kwargs["hidden_states"]
            samples[key] += hidden_states.shape[0] // num_frames  # the UNet runs samples × frames as one batch

        return hook

    hooks = [unet.conv_in.register_forward_pre_hook(count("all"), with_kwargs=True),
             unet.mid_block.register_forward_pre_hook(count("whole"), with_kwargs=True)]
    try:
        yield samples
    finally:
        for hook in hooks:
            hook.remove()


def describe(request, stock: bool) -> str:
    """What the row's denoising runs, read from its request (the preset resolved)."""
    what = f"{request.schedule}, {request.num_inference_steps} steps"
    if request.conditional_final_steps:
        what += f", last {request.conditional_final_steps} conditional-only"
    if request.cache_interval > 1:
        what += f", cache_interval {request.cache_interval} (branch {request.cache_branch_id})"
    return what + (" (stock attention)" if stock else "")


def measure(width: int, height: int, num_frames: int, repeats: int) -> list[list]:
    from svd_engine import SVDEngine

    engine = SVDEngine.load(model_source="random-xt", device="cpu", max_work=2**62)
    image = SAMPLE.read_bytes()
    base = {"width": width, "height": height, "num_frames": num_frames, "decode_chunk_size": num_frames,
            "seed": 0, "video_format": "frames"}
    requests = {row: engine.parse(image, **base, **fields) for row, fields in ROWS}
    warm_up = engine.parse(image, **base, num_inference_steps=1)
    engine_run(engine, warm_up)  # first-call costs of each pipeline
    stock_run(engine, warm_up)

    cpu: dict[str, list[float]] = {row: [] for row in requests}
    wall: dict[str, list[float]] = {row: [] for row in requests}
    frames: dict[str, np.ndarray] = {}
    passes: dict[str, dict[str, int]] = {}
    for _ in range(repeats):
        for row, request in requests.items():
            with counted_passes(engine.feature_cache.unet, num_frames) as passes[row]:
                if row == STOCK:
                    frames[row], _, seconds, wall_seconds = stock_run(engine, request)
                else:
                    result, _, seconds, wall_seconds = engine_run(engine, request)
                    frames[row] = result.frames
            cpu[row].append(seconds)
            wall[row].append(wall_seconds)

    stock_cpu = statistics.median(cpu[STOCK])
    rows = []
    for row, request in requests.items():
        whole, shallow = passes[row]["whole"], passes[row]["all"] - passes[row]["whole"]
        median = statistics.median(cpu[row])
        reference, video = frames["quality"], frames[row]
        deviation = (["–", "–"] if row == "quality" else
                     [f"{psnr(video, reference):.1f}", str(int(np.abs(video.astype(int) - reference).max()))])
        rows.append([row, describe(request, row == STOCK), f"{whole} + {shallow} shallow" if shallow else str(whole),
                     f"{median:.1f} ({min(cpu[row]):.1f}–{max(cpu[row]):.1f})", f"{stock_cpu / median:.2f}×",
                     f"{statistics.median(wall[row]):.1f}", *deviation])
    return rows


def size_arg(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=size_arg, default=(64, 64), help="WIDTHxHEIGHT of every video, default 64x64")
    parser.add_argument("--frames", type=int, default=4, help="frames of every video, default 4 (as bench-cache)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every row (the median is reported)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: CPU time is work done, no spin-waiting)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    (width, height), frames = args.size, args.frames
    rows = measure(width, height, frames, args.repeats)
    minutes = (time.perf_counter() - started) / 60
    table = markdown_table(["row", "denoising", "UNet passes (batch-1 units)", "CPU s end to end: median (min–max)",
                            "vs stock", "wall s, median", "PSNR dB vs quality", "max abs diff vs quality"], rows)
    print(table, flush=True)
    fast = next(row[4] for row in rows if row[0] == "fast")
    body = (f"`random-xt` (SVD-XT's architecture, random weights), {width}×{height}, {frames} frames, float32, on "
            f"{os.cpu_count()} CPU cores shared with other work, {args.threads} torch thread(s); the median of "
            f"{args.repeats} rounds, each running every row once in this order; "
            f"{datetime.date.today().isoformat()}, {minutes:.0f} minutes in all. Run by `make bench-presets`.\n\n"
            f"{table}\n\n"
            "End to end: image in, frames out (CLIP and VAE encode, denoising, VAE decode; no video encoding), in "
            "this process's CPU seconds (other work on the machine barely moves them; wall seconds beside them). "
            "UNet passes are counted as they run: a guided step is 2, a conditional-only step 1, a cached step's "
            "shallow branch is listed apart. PSNR and max abs diff (0–255 levels) compare each row's frames with "
            "the quality row's at the same seed. **Random weights measure speed and numerical deviation only, not "
            "visual quality.** At this size the fixed work (image encoder, VAE) and a batch-1 pass's poor use of "
            "the CPU weigh more than at 1024×576, 25 frames, where the work table (`make bench-work`) counts the "
            "same rows.\n\n"
            f"Goal: `fast` at least 2.5× faster than stock diffusers end to end; measured {fast}.\n\n"
            f"1-minute load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.")
    if not args.no_write:
        write_section("presets", "Speed presets end to end vs stock diffusers (CPU, random-xt)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
