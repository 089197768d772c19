"""The fast path against stock diffusers: same weights, same input, one run; a table into docs/benchmarks.md.

    python benchmarks/fast_path.py                      # CPU smoke: tiny model, 128×128, 8 frames, 4 steps
    python benchmarks/fast_path.py --size xt            # CUDA: SVD-XT architecture, random weights, 1024×576,
                                                        # 25 frames, 25 steps, guidance 1→3
    python benchmarks/fast_path.py --size xt --ablate --dtypes bfloat16 --fp8 --decode-chunk-sizes 4,14

Rows: the stock `StableVideoDiffusionPipeline` as a user runs it (float16 on CUDA, float32 on CPU,
the model card's decode_chunk_size), the float32 pipeline as a fidelity reference (CUDA only, one
run, not timed), our engine with the fast path off, and with it on; optional rows switch one thing
at a time. Each timed row: `--warmup` runs, then `--runs` timed runs; phases and the per-step time
are from the last run, end to end is the median. Fidelity compares uint8 frames with the stock
row's and the reference's (max abs difference, PSNR in dB).
"""
from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from report import ROOT, markdown_table, write_section

sys.path.insert(0, str(ROOT / "model_repository" / "svd_xt" / "1"))
from diffusers import StableVideoDiffusionPipeline  # noqa: E402

from svd_engine import EngineConfig, SVDEngine, encode_video  # noqa: E402
from svd_engine.loading import load_pipeline, resolve_device, resolve_dtype  # noqa: E402
from svd_engine.pipeline import PhaseTimer, uint8_frames  # noqa: E402
from svd_engine.request import parse_request  # noqa: E402

SAMPLE = ROOT / "client" / "svd_triton" / "data" / "sample.png"
SIZES = {  # source, width, height, frames, steps, decode chunk
    "tiny": ("tiny", 128, 128, 8, 4, 4),
    "xt": ("random-xt", 1024, 576, 25, 25, 8),
}
ABLATIONS = {"channels_last": False, "fuse_qkv": False, "compile": "none", "compile_vae": False}
SEED = 42
GIB = 1024 ** 3


@dataclass
class Row:
    name: str
    load: float
    e2e: list[float] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    steps: list[float] = field(default_factory=list)
    peak: tuple[float, float] | None = None
    """Peak allocated and reserved device memory, GiB (CUDA only)."""
    frames: np.ndarray | None = None
    timed: bool = True


class StepClock:
    """Wall time at each denoising step's end, the device synchronised first."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []

    def tick(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times.append(time.perf_counter())

    def durations(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:])]


def measure(row: Row, run, device: torch.device, warmup: int, runs: int) -> Row:
    """Call `run()` (→ frames, phases, step durations) warmup + runs times, recording the timed runs."""
    for _ in range(warmup):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(runs):
        started = time.perf_counter()
        row.frames, row.phases, row.steps = run()
        row.e2e.append(time.perf_counter() - started)
    if device.type == "cuda":
        row.peak = (torch.cuda.max_memory_allocated(device) / GIB, torch.cuda.max_memory_reserved(device) / GIB)
    return row


def stock_row(name: str, config: EngineConfig, dtype: torch.dtype, request, device, warmup: int, runs: int) -> Row:
    """diffusers' own pipeline on the same weights: phases from module hooks, steps from its callback."""
    started = time.perf_counter()
    pipe = StableVideoDiffusionPipeline(**load_pipeline(config.model_source, device=device, dtype=dtype).components)
    pipe.set_progress_bar_config(disable=True)
    row = Row(name, time.perf_counter() - started)
    timer = PhaseTimer(device)
    for module, phase in ((pipe.image_encoder, "preparing"), (pipe.unet, "denoising"), (pipe.vae.decoder, "decoding")):
        module.register_forward_pre_hook(lambda *_, phase=phase: timer.enter(phase))

    def run():
        timer.seconds.clear()
        clock = StepClock(device)
        video = pipe(request.image, height=request.height, width=request.width, num_frames=request.num_frames,
                     num_inference_steps=request.num_inference_steps, decode_chunk_size=request.decode_chunk_size,
                     generator=torch.Generator("cpu").manual_seed(SEED), output_type="pt", return_dict=False,
                     callback_on_step_end=lambda *_: clock.tick() or {})
        frames = uint8_frames(video)[0]
        timer.enter("encoding")
        encode_video(frames, request.video_format, request.fps)
        timer.enter(None)
        return frames, dict(timer.seconds), clock.durations()

    with torch.inference_mode():
        measure(row, run, device, warmup, runs)
    return row


def engine_row(name: str, config: EngineConfig, image: bytes, device, warmup: int, runs: int) -> Row:
    """Our engine as Triton runs it: parse (image decode, resize), generate, encode."""
    started = time.perf_counter()
    engine = SVDEngine.load(config)
    row = Row(name, time.perf_counter() - started)

    def run():
        clock = StepClock(device)

        def on_progress(event):
            if event.phase == "denoising" and event.step:
                clock.tick()

        [result] = engine.generate([engine.parse(image, seed=SEED)], on_progress=on_progress)
        return result.frames, {k: v for k, v in result.timings.items() if k != "image"}, clock.durations()

    measure(row, run, device, warmup, runs)
    engine.close()
    return row


def say(row: Row) -> Row:
    print(f"{row.name}: {statistics.median(row.e2e):.2f} s end to end", flush=True)
    return row


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def fidelity(frames: np.ndarray, against: np.ndarray | None) -> tuple[str, str]:
    if against is None or frames is None:
        return "—", "—"
    return str(int(np.abs(frames.astype(np.int16) - against).max())), f"{psnr(frames, against):.1f}"


def table(rows: list[Row], device: torch.device) -> str:
    stock, reference = rows[0], next((r for r in rows if not r.timed), None)
    header = ["variant", "end to end p50 (s)", "vs stock", "CLIP + VAE encode (s)", "denoising (s)", "step p50 (s)",
              "VAE decode (s)", "video encode (s)", "peak GPU memory (GiB, allocated / reserved)",
              "max abs diff vs stock", "PSNR vs stock (dB)", "PSNR vs fp32 (dB)", "load + compile (s)"]
    lines = []
    for row in rows:
        p50 = statistics.median(row.e2e)
        timed = [f"{p50:.2f}", f"{statistics.median(stock.e2e) / p50:.2f}×"] + [
            f"{row.phases.get(phase, 0):.3f}" for phase in ("preparing", "denoising")] + [
            f"{statistics.median(row.steps):.3f}" if row.steps else "—"] + [
            f"{row.phases.get(phase, 0):.3f}" for phase in ("decoding", "encoding")]
        peak = f"{row.peak[0]:.1f} / {row.peak[1]:.1f}" if row.peak else ("n/a (CPU)" if device.type == "cpu" else "—")
        max_diff, vs_stock = fidelity(row.frames, stock.frames) if row is not stock else ("0", "—")
        vs_reference = fidelity(row.frames, reference.frames)[1] if reference and row is not reference else "—"
        lines.append([row.name] + (timed if row.timed else ["(fidelity only, 1 run)"] + ["—"] * 6)
                     + [peak if row.timed else "—", max_diff, vs_stock, vs_reference, f"{row.load:.1f}"])
    return markdown_table(header, lines)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="tiny (smoke) or xt (full size, random weights)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--decode-chunk-size", type=int)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per row (end to end is their median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per row first")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="engine parameter for the fast-path rows (config.pbtxt names), e.g. compile=max-autotune")
    parser.add_argument("--ablate", action="store_true", help="one more row per fast-path switch, that switch off")
    parser.add_argument("--dtypes", default="", help="more fast-path rows in these dtypes, e.g. bfloat16")
    parser.add_argument("--fp8", action="store_true", help="one more row with fp8=true (Hopper/Ada, torchao)")
    parser.add_argument("--decode-chunk-sizes", default="", help="more fast-path rows with these VAE decode chunk sizes")
    parser.add_argument("--no-reference", action="store_true", help="skip the float32 reference row on CUDA")
    parser.add_argument("--doc", type=Path, help="write the table here instead of docs/benchmarks.md")
    args = parser.parse_args(argv)

    source, width, height, frames, steps, chunk = SIZES[args.size]
    device = resolve_device(args.device)
    base = EngineConfig(model_source=source, device=str(device), default_width=args.width or width,
                        default_height=args.height or height, default_num_frames=args.frames or frames,
                        default_num_inference_steps=args.steps or steps,
                        default_decode_chunk_size=args.decode_chunk_size or chunk, default_video_format="mp4")
    fast = EngineConfig.from_parameters({**{k: str(v) for k, v in vars(base).items()}, "fast_path": "on",
                                         **dict(item.split("=", 1) for item in args.set)})
    image = SAMPLE.read_bytes()
    request = parse_request(image, {"seed": SEED}, base, model_num_frames=base.default_num_frames)
    dtype = resolve_dtype("auto", device)
    precision = str(dtype).removeprefix("torch.")
    rows = [say(stock_row(f"stock diffusers, {precision}", base, dtype, request, device, args.warmup, args.runs))]
    if device.type == "cuda" and not args.no_reference:
        rows.append(say(stock_row("stock diffusers, float32 (reference)", base, torch.float32, request, device, 0, 1)))
        rows[-1].timed = False
    engine_rows = [("engine, fast path off", replace(base, fast_path="off")), ("engine, fast path on", fast)]
    if args.ablate:
        engine_rows += [(f"fast path, {key}={value}".replace("True", "true").replace("False", "false"),
                         replace(fast, **{key: value})) for key, value in ABLATIONS.items()]
    engine_rows += [(f"fast path, {dt}", replace(fast, dtype=dt)) for dt in filter(None, args.dtypes.split(","))]
    if args.fp8:
        engine_rows.append(("fast path, fp8", replace(fast, fp8=True)))
    engine_rows += [(f"fast path, decode chunk {n}", replace(fast, default_decode_chunk_size=int(n)))
                    for n in filter(None, args.decode_chunk_sizes.split(","))]
    for name, config in engine_rows:
        rows.append(say(engine_row(name, config, image, device, args.warmup, args.runs)))
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    describe = lambda c: ", ".join(f"{k}={getattr(c, k)}" for k in ("dtype", "spatial_attention", "temporal_attention",
                                                                     "fuse_qkv", "channels_last", "compile", "compile_vae", "compile_backend"))
    body = (f"{source} weights, {request.width}×{request.height}, {request.num_frames} frames, {request.num_inference_steps} steps, "
            f"guidance {request.min_guidance_scale:g}→{request.max_guidance_scale:g}, decode chunk {request.decode_chunk_size}, "
            f"MP4 output, seed {SEED}; {args.warmup} warm-up + {args.runs} timed runs per row.\n"
            f"Fast path: {describe(fast)}.\n\n{table(rows, device)}")
    write_section(f"fast-path-{device.type}-{args.size}", f"Fast path vs stock diffusers ({device.type.upper()}, {args.size})",
                  body, doc=args.doc)
    print(table(rows, device))
    return rows


if __name__ == "__main__":
    main()
