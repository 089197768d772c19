"""What feature caching (DeepCache-style, `cache_interval`/`cache_branch_id`) saves, and how far it moves the output.

Times stock diffusers and the engine at intervals 1, 2, 3, 5 and each branch depth, on `random-xt`
(SVD-XT's full architecture, random weights) at a reduced size and on `tiny`, in one run: seconds per
denoising step (the denoising phase over its steps) and end to end (image in, frames out, no video
encoding). Each cached row's frames are compared with the uncached engine's at the same seed: PSNR and
the largest difference in 0–255 levels. Random weights measure numerical deviation only, not visual
quality. `--count-flops` instead counts each branch's share of a whole UNet step on SVD-XT's UNet at full
size (the engine's SHALLOW_STEP_COST, which max_work charges).
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

from benchmarks.report import ROOT, markdown_table, write_section

SAMPLE = ROOT / "src" / "svd_triton" / "data" / "sample.png"
INTERVALS = (2, 3, 5)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def stock_run(engine, request) -> tuple[np.ndarray, float, float, float]:
    """Stock diffusers on the engine's models: frames, CPU seconds per denoising step, end to end, wall seconds."""
    import torch
    from diffusers import StableVideoDiffusionPipeline

    from svd_engine.pipeline import uint8_frames

    stock = StableVideoDiffusionPipeline(**engine.pipeline.components)
    marks: dict[str, float] = {}

    def first_unet_call(*_):  # returns None: a pre-hook's return value would replace the UNet's inputs
        marks.setdefault("first unet call", time.process_time())

    hook = stock.unet.register_forward_pre_hook(first_unet_call)

    def step_end(pipeline, step, timestep, tensors):
        marks["last step"] = time.process_time()
        return {}

    started, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        video = stock(request.image, height=request.height, width=request.width, num_frames=request.num_frames,
                      num_inference_steps=request.num_inference_steps, decode_chunk_size=request.decode_chunk_size,
                      generator=torch.Generator("cpu").manual_seed(request.seed), output_type="pt",
                      callback_on_step_end=step_end, return_dict=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - started
    hook.remove()
    return uint8_frames(video)[0], (marks["last step"] - marks["first unet call"]) / request.num_inference_steps, cpu, wall


def engine_run(engine, request):
    """The engine: its result, CPU seconds per denoising step, end to end, wall seconds."""
    marks: dict[str, float] = {}
    started, cpu = time.perf_counter(), time.process_time()
    [result] = engine.generate([request], on_progress=lambda event: marks.setdefault(event.phase, time.process_time()))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - started
    return result, (marks["decoding"] - marks["denoising"]) / request.num_inference_steps, cpu, wall


def settings(branches: int, all_branches: bool) -> list[tuple[int, int]]:
    """(interval, branch) rows after the uncached one: every interval at branch 0, then the other branches
    at interval 3 (or at every interval with `all_branches`)."""
    rows = [(k, 0) for k in INTERVALS]
    rows += [(k, b) for b in range(1, branches) for k in (INTERVALS if all_branches else (3,))]
    return rows


def model_rows(source: str, base: dict, repeats: int, all_branches: bool) -> list[list]:
    from svd_engine import SVDEngine

    engine = SVDEngine.load(model_source=source, device="cpu", max_work=2**62)
    image = SAMPLE.read_bytes()
    engine.generate([engine.parse(image, seed=0, video_format="frames", **{**base, "num_inference_steps": 1})])  # first-call costs
    request = lambda **values: engine.parse(image, seed=0, video_format="frames", **base, **values)
    stock_frames, *stock = zip(*(stock_run(engine, request()) for _ in range(repeats)))
    stock_step, stock_total, stock_wall = (min(values) for values in stock)
    rows = [["stock diffusers", "–", f"{stock_step:.3f}", "1.00×", f"{stock_total:.2f}", "1.00×", f"{stock_wall:.2f}",
             "–", "–"]]
    reference = None
    for interval, branch in [(1, 0), *settings(engine.feature_cache.branches, all_branches)]:
        results, *measured = zip(*(engine_run(engine, request(cache_interval=interval, cache_branch_id=branch))
                                   for _ in range(repeats)))
        step, total, wall = (min(values) for values in measured)
        frames = results[0].frames
        if reference is None:
            reference = frames
            label, quality = "engine, caching off", [f"{psnr(frames, stock_frames[0]):.1f} (vs stock)",
                                                     f"{int(np.abs(frames.astype(int) - stock_frames[0]).max())} (vs stock)"]
        else:
            label, quality = f"interval {interval}, branch {branch}", [f"{psnr(frames, reference):.1f}",
                                                                      str(int(np.abs(frames.astype(int) - reference).max()))]
        whole = math.ceil(base["num_inference_steps"] / interval)
        rows.append([label, f"{whole}/{base['num_inference_steps']}", f"{step:.3f}", f"{stock_step / step:.2f}×",
                     f"{total:.2f}", f"{stock_total / total:.2f}×", f"{wall:.2f}", *quality])
    return rows


def count_flops(width: int, height: int, frames: int) -> list[list]:
    """Each branch's cached step as a share of a whole UNet step: SVD-XT's UNet on the meta device (no compute)."""
    import torch
    from diffusers import UNetSpatioTemporalConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from svd_engine.feature_cache import CachedUNet, CachePlan, FeatureCache

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel().to("meta")  # its defaults are SVD-XT's UNet
        inputs = (torch.empty(2, frames, 8, height // 8, width // 8), torch.tensor(1.0), torch.empty(2, 1, 1024),
                  torch.empty(2, 3))  # batch 2: classifier-free guidance

    def flops(call) -> int:
        with FlopCounterMode(display=False) as counter, torch.device("meta"):
            call(*inputs)
        return counter.get_total_flops()

    cache, rows = FeatureCache(unet), []
    whole = flops(lambda *args: unet(*args, return_dict=False))
    for branch in range(cache.branches):
        split = CachedUNet(cache, CachePlan(2, branch), unet)
        assert flops(split) == whole  # step 0: the whole pass
        rows.append([branch, f"{flops(split) / whole:.4f}", f"{math.ceil(flops(split) / whole * 100) / 100:.2f}"])
    return [["whole step", f"{whole / 1e12:.1f} TFLOP", ""], *rows]


def shape_arg(text: str) -> tuple[int, int]:
    size, frames = text.lower().split("x")
    return int(size), int(frames)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for model, shape in (("random-xt", "64x4"), ("tiny", "128x8")):
        parser.add_argument(f"--{model.split('-')[-1]}-shape", type=shape_arg, default=shape,
                            help=f"{model}: SIZExFRAMES (width and height SIZE), default {shape}")
    parser.add_argument("--steps", type=int, default=6, help="denoising steps of every run")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row (the fastest is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is work done, no spin-waiting)")
    parser.add_argument("--all-branches", action="store_true", help="every branch at every interval on random-xt too")
    parser.add_argument("--count-flops", action="store_true", help="only count each branch's FLOP share at full size")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)

    if args.count_flops:
        print(markdown_table(["cache_branch_id", "share of a whole step (1024×576, 25 frames)", "rounded up"],
                             count_flops(1024, 576, 25)))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    header = ["model, setting", "whole UNet steps", "CPU s / step", "step vs stock", "CPU s end to end", "e2e vs stock",
              "wall s end to end", "PSNR dB vs uncached", "max abs diff"]
    sections = []
    for source, (size, frames), all_branches in (("random-xt", args.xt_shape, args.all_branches),
                                                  ("tiny", args.tiny_shape, True)):
        base = {"width": size, "height": size, "num_frames": frames, "num_inference_steps": args.steps,
                "decode_chunk_size": frames}
        rows = model_rows(source, base, args.repeats, all_branches)
        table = markdown_table(header, rows)
        print(f"{source}\n{table}", flush=True)
        sections.append(f"`{source}`, {size}×{size}, {frames} frames, {args.steps} steps, float32, best of "
                        f"{args.repeats}:\n\n{table}")
    load = os.getloadavg()[0]
    body = (f"Times are this process's CPU seconds on {args.threads} torch thread(s): on a shared machine, other "
            "work barely moves them (with more threads, waiting threads spin and count too); wall seconds end to "
            "end are given beside them. Per denoising step: the denoising phase over its "
            "steps (stock diffusers: from its first UNet call to its last step's end). End to end: image in, "
            "frames out (CLIP and VAE encode, denoising, VAE decode; frames, no video encoding). \"whole UNet steps\": steps that ran the whole UNet, the others ran the "
            "shallow branch. PSNR and max abs diff (0–255 levels) compare each cached video with the uncached "
            "engine's at the same seed; the uncached engine's row compares it with stock diffusers. **Random "
            "weights measure numerical deviation only, not visual quality**; see [reference.md](reference.md#feature-caching) "
            "for the published quality trade-off.\n\n" + "\n\n".join(sections)
            + f"\n\n1-minute load average at the end: {load:.1f} on {os.cpu_count()} cores.")
    if not args.no_write:
        write_section("feature-cache", "Feature caching (DeepCache-style)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
