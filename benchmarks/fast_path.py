"""The fast path against stock diffusers: same weights, same input, one run; a table into docs/benchmarks.md.

    python -m benchmarks.fast_path                      # CPU smoke: tiny model, 128×128, 8 frames, 4 steps
    python -m benchmarks.fast_path --size xt            # CUDA: SVD-XT architecture, random weights, 1024×576,
                                                        # 25 frames, 25 steps, guidance 1→3
    python -m benchmarks.fast_path --size xt --ablate --vary dtype=bfloat16 --vary compile=reduce-overhead \
        --vary fp8=true --vary default_decode_chunk_size=2,4,14 --results out/fast-path-xt

Rows: the stock `StableVideoDiffusionPipeline` as a user runs it (float16 on CUDA, float32 on CPU,
the model card's decode_chunk_size), the float32 pipeline as a fidelity reference (CUDA only, one
run, not timed), our engine with the fast path off, and with it on; optional rows switch one thing
at a time. Each timed row: `--warmup` runs, then `--runs` timed runs; phases and the per-step time
are from the last run, end to end is the median. Fidelity compares uint8 frames with the stock
row's and the reference's (max abs difference, PSNR in dB).

A full-size run takes longer than some machines allow one command (stock float16 and float32 rows,
a compilation per fast-path row). With `--results DIR` each finished row is kept in DIR (its
numbers; the frames of the stock and reference rows, which later rows are compared with), and the
same command run again measures only what is missing, then writes the whole table.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from benchmarks.report import ROOT, markdown_table, write_section

from diffusers import StableVideoDiffusionPipeline

from svd_engine import EngineConfig, SVDEngine, encode_video
from svd_engine.loading import load_pipeline, resolve_device, resolve_dtype
from svd_engine.pipeline import PhaseTimer, uint8_frames
from svd_engine.request import parse_request

SAMPLE = ROOT / "src" / "svd_triton" / "data" / "sample.png"
SIZES = {  # source, width, height, frames, steps, decode chunk
    "tiny": ("tiny", 128, 128, 8, 4, 4),
    "xt": ("random-xt", 1024, 576, 25, 25, 8),
}
ABLATIONS = {"channels_last": "false", "fuse_qkv": "false", "compile": "none", "compile_vae": "false"}
"""--ablate: one row per fast-path switch turned off."""
SEED = 42
GIB = 1024 ** 3


@dataclass
class Row:
    name: str
    load: float
    e2e: list[float] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    steps: list[float] = field(default_factory=list)
    peak: list[float] | None = None
    """Peak allocated and reserved device memory, GiB (CUDA only)."""
    timed: bool = True
    settings: str = ""
    """What was measured (configuration, size, run counts): a kept row is reused only for the same."""
    max_diff: int | None = None
    """Largest difference from the stock row's frames, uint8 levels."""
    psnr_stock: float | None = None
    psnr_reference: float | None = None
    frames: np.ndarray | None = field(default=None, repr=False)


class Results:
    """The rows measured so far, kept in a folder (`--results`) so that a long run can stop and go on.

    A row is reused when its name and settings match. The stock and reference rows are reused only
    with their frames, which every later row is compared with; otherwise they are measured again.
    """

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.rows: dict[str, dict] = {}
        if folder and (folder / "rows.json").exists():
            self.rows = {row["name"]: row for row in json.loads((folder / "rows.json").read_text())}

    def reuse(self, name: str, settings: str, with_frames: bool) -> Row | None:
        kept = self.rows.get(name)
        if kept is None or kept["settings"] != settings:
            return None
        row = Row(**kept)
        if with_frames:
            frames = self._frames_file(name)
            if not frames.exists():
                return None
            row.frames = np.load(frames)
        print(f"{name}: kept from {self.folder}", flush=True)
        return row

    def keep(self, row: Row, with_frames: bool) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if with_frames:
            np.save(self._frames_file(row.name), row.frames)
        self.rows[row.name] = {f.name: getattr(row, f.name) for f in fields(row) if f.name != "frames"}  # no frame copy
        partial = self.folder / "rows.json.partial"
        partial.write_text(json.dumps(list(self.rows.values()), indent=1))
        partial.replace(self.folder / "rows.json")  # whole or not at all, even when the run is killed

    def _frames_file(self, name: str) -> Path:
        return self.folder / ("frames-" + "".join(c if c.isalnum() else "-" for c in name) + ".npy")


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
        row.peak = [torch.cuda.max_memory_allocated(device) / GIB, torch.cuda.max_memory_reserved(device) / GIB]
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
    row = measure_engine(Row(name, time.perf_counter() - started), engine, image, device, warmup, runs)
    engine.close()
    return row


def measure_engine(row: Row, engine, image: bytes, device, warmup: int, runs: int, **fields) -> Row:
    """`measure` one request (the seed plus request `fields`) through a loaded engine."""

    def run():
        clock = StepClock(device)

        def on_progress(event):
            if event.phase == "denoising" and event.step:
                clock.tick()

        [result] = engine.generate([engine.parse(image, seed=SEED, **fields)], on_progress=on_progress)
        if isinstance(result, Exception):
            raise result
        return result.frames, {k: v for k, v in result.timings.items() if k != "image"}, clock.durations()

    return measure(row, run, device, warmup, runs)


def parameters(config: EngineConfig) -> dict[str, str]:
    """`config` as config.pbtxt-style strings, to derive variants from with EngineConfig.from_parameters."""
    return {name: str(value) for name, value in vars(config).items()}


class Planned(NamedTuple):
    """One row to measure: the stock pipeline in `stock_dtype`, or (stock_dtype None) our engine."""

    name: str
    config: EngineConfig
    stock_dtype: torch.dtype | None
    warmup: int
    runs: int
    timed: bool = True
    """False for the float32 reference: one run, for fidelity only."""


def measure_planned(planned: Planned, request, image: bytes, device: torch.device) -> Row:
    if planned.stock_dtype is not None:
        row = stock_row(planned.name, planned.config, planned.stock_dtype, request, device, planned.warmup, planned.runs)
    else:
        row = engine_row(planned.name, planned.config, image, device, planned.warmup, planned.runs)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def say(row: Row) -> Row:
    print(f"{row.name}: {statistics.median(row.e2e):.2f} s end to end", flush=True)
    return row


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def compare(row: Row, stock: Row | None, reference: Row | None) -> None:
    """Fill in the row's fidelity against the stock and reference frames (those rows come first)."""
    if stock is not None and row is not stock:
        row.max_diff = int(np.abs(row.frames.astype(np.int16) - stock.frames).max())
        row.psnr_stock = psnr(row.frames, stock.frames)
    if reference is not None and row is not reference:
        row.psnr_reference = psnr(row.frames, reference.frames)


def decibels(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def table(rows: list[Row], device: torch.device) -> str:
    stock = rows[0]
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
        lines.append([row.name] + (timed if row.timed else ["(fidelity only, 1 run)"] + ["—"] * 6)
                     + [peak if row.timed else "—", "0" if row is stock else row.max_diff, decibels(row.psnr_stock),
                        decibels(row.psnr_reference), f"{row.load:.1f}"])
    return markdown_table(header, lines)


def describe(config: EngineConfig) -> str:
    """The fast-path switches of `config`, for a table's caption."""
    return ", ".join(f"{k}={getattr(config, k)}" for k in ("dtype", "spatial_attention", "temporal_attention", "fuse_qkv",
                                                          "channels_last", "compile", "compile_vae", "compile_backend"))


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
    parser.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                        help="one more fast-path row per value with only KEY changed (config.pbtxt names), e.g. "
                             "dtype=bfloat16, compile=reduce-overhead, fp8=true, default_decode_chunk_size=2,4,14")
    parser.add_argument("--no-reference", action="store_true", help="skip the float32 reference row on CUDA")
    parser.add_argument("--doc", type=Path, help="write the table here instead of docs/benchmarks.md")
    parser.add_argument("--results", type=Path, help="keep each finished row here; run again to measure only what is missing")
    args = parser.parse_args(argv)

    source, width, height, frames, steps, chunk = SIZES[args.size]
    device = resolve_device(args.device)
    base = EngineConfig(model_source=source, device=str(device), default_width=args.width or width,
                        default_height=args.height or height, default_num_frames=args.frames or frames,
                        default_num_inference_steps=args.steps or steps,
                        default_decode_chunk_size=args.decode_chunk_size or chunk, default_video_format="mp4")
    fast = EngineConfig.from_parameters({**parameters(base), "fast_path": "on", **dict(item.split("=", 1) for item in args.set)})
    image = SAMPLE.read_bytes()
    request = parse_request(image, {"seed": SEED}, base, model_num_frames=base.default_num_frames)
    dtype = resolve_dtype("auto", device)
    precision = str(dtype).removeprefix("torch.")
    reference = device.type == "cuda" and not args.no_reference
    plan = [Planned(f"stock diffusers, {precision}", base, dtype, args.warmup, args.runs)]
    if reference:
        plan.append(Planned("stock diffusers, float32 (reference)", base, torch.float32, 0, 1, timed=False))
    engine_rows = [("engine, fast path off", replace(base, fast_path="off")), ("engine, fast path on", fast)]
    variations = list(ABLATIONS.items()) if args.ablate else []
    variations += [(key, value) for item in args.vary for key, values in [item.split("=", 1)] for value in values.split(",")]
    try:
        engine_rows += [(f"fast path, {key}={value}", EngineConfig.from_parameters({**parameters(fast), key: value}))
                        for key, value in variations]
    except ValueError as error:
        parser.error(str(error))
    plan += [Planned(name, config, None, args.warmup, args.runs) for name, config in engine_rows]

    results = Results(args.results)
    rows: list[Row] = []
    compared_with = 2 if reference else 1  # the stock (and reference) rows: every later row is compared with them
    for index, planned in enumerate(plan):
        settings = repr(planned[1:])
        row = results.reuse(planned.name, settings, with_frames=index < compared_with)
        if row is None:
            row = measure_planned(planned, request, image, device)
            row.settings, row.timed = settings, planned.timed
            compare(row, rows[0] if rows else None, rows[1] if reference and len(rows) > 1 else None)
            results.keep(row, with_frames=index < compared_with)
            say(row)
        if index >= compared_with:
            row.frames = None
        rows.append(row)

    body = (f"{source} weights, {request.width}×{request.height}, {request.num_frames} frames, {request.num_inference_steps} steps, "
            f"guidance {request.min_guidance_scale:g}→{request.max_guidance_scale:g}, decode chunk {request.decode_chunk_size}, "
            f"MP4 output, seed {SEED}; {args.warmup} warm-up + {args.runs} timed runs per row.\n"
            f"Fast path: {describe(fast)}.\n\n{table(rows, device)}")
    if any(key == "default_decode_chunk_size" for key, _ in variations):
        body += ("\n\nRows with another decode chunk size differ from stock by design: the temporal decoder "
                 "mixes the frames within a chunk.")
    write_section(f"fast-path-{device.type}-{args.size}", f"Fast path vs stock diffusers ({device.type.upper()}, {args.size})",
                  body, doc=args.doc)
    print(table(rows, device))
    return rows


if __name__ == "__main__":
    main()
