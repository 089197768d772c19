"""The GPU benchmark kit: one offline command on a GPU box measures the GPU rows, the rows that matter
most first, each written out as soon as measured.

    bash scripts/gpu_session.sh                      # on the GPU box (make gpu-session): random-xt,
                                                     # 1024×576, 25 frames; the table goes to $OUT or out/gpu-session
    python -m benchmarks.gpu_session --size tiny     # the CPU rehearsal (tests/deploy/test_gpu_session.py)
    python -m benchmarks.gpu_session --publish DIR   # copy DIR/benchmarks.md's table into docs/benchmarks.md

Rows, in this order: stock diffusers float16 (the anchor); our engine float16 with the fast path
compiled; the same engine with feature caching (request fields `cache_interval=3`, `cache_branch_id=0`: no new
engine, no compile); bfloat16; FP8 UNet linear layers (torchao). A row whose engine or request field this build
lacks is listed as not measured, with why. A row starts only if the rows so far say it ends within
`--budget` seconds; a row that fails is listed with its error and the run goes on.

Each row: one warm-up run, then one timed run of `--steps` denoising steps (few, to fit the budget).
The end-to-end time at 25 steps is built from the measured phases (image encode + 25 × the step time
+ VAE decode + video encode; with caching, full and cached steps counted as a 25-step run has them)
and labelled so; the timed run's own end-to-end time is in the table too. After each row the table
is rewritten in `--out` (benchmarks.md, in docs/benchmarks.md's section format, and rows.json), so a
run cut off by its time limit still returns every row it finished.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import math
import os
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from benchmarks.fast_path import (SAMPLE, SEED, Planned, Row, compare, decibels, describe, measure_engine, measure_planned,
                                  parameters)
from benchmarks.report import DOC, ROOT, copy_section, markdown_table, write_section

from svd_contract import PARAMETERS
from svd_engine import EngineConfig, SVDEngine
from svd_engine.loading import DTYPES, resolve_device
from svd_engine.request import parse_request

SIZES = {  # source, width, height, frames, decode chunk
    "xt": ("random-xt", 1024, 576, 25, 8),
    "tiny": ("tiny", 64, 64, 4, 4),
}
MEASURED_STEPS = 6
"""Enough for a steady step time (and, at cache interval 3, full and cached steps); few enough to fit."""
REPORTED_STEPS = 25
"""SVD-XT's own step count: the end-to-end column is built for it."""
SECTION = "gpu-session"


@dataclass(frozen=True)
class Variant:
    name: str
    engine: dict[str, str] = field(default_factory=dict)
    """Engine parameters (config.pbtxt names) over the fast-path configuration."""
    request: dict[str, object] = field(default_factory=dict)
    """Request fields (svd_contract names) besides the seed."""
    stock: bool = False
    needs: str | None = None
    """A module the row cannot run without."""


def variants(half: str) -> tuple[Variant, ...]:
    """The rows, `half` (float16 on the GPU) for the anchor and the engine rows but the bfloat16 one."""
    return (
        Variant(f"stock diffusers, {half}", {"dtype": half}, stock=True),
        Variant(f"engine, compiled, {half}", {"dtype": half}),
        Variant(f"engine, compiled, {half}, feature caching", {"dtype": half}, {"cache_interval": 3, "cache_branch_id": 0}),
        Variant("engine, compiled, bfloat16", {"dtype": "bfloat16"}),
        Variant(f"engine, compiled, {half}, FP8 UNet linears", {"dtype": half, "fp8": "true"}, needs="torchao"),
    )


"""In order of importance. Feature caching runs on the float16 engine before bfloat16: it is a request
field of the engine already compiled, so it costs seconds where the bfloat16 row costs a compile."""


@dataclass
class Outcome:
    """One row of the table: measured numbers, or why there are none."""

    variant: Variant
    status: str = "not reached"
    """measured, running (when the file was last written), not measured: …, failed: …, not reached."""
    row: Row | None = None
    compile_seconds: float | None = None
    wall: float = 0.0
    """Seconds the row took here, loading and compiling included (the budget's estimate)."""


class Session:
    """One run of the kit: the rows in order, one engine loaded at a time, the table rewritten after each row."""

    def __init__(self, args, base: EngineConfig, image: bytes, device: torch.device):
        self.args, self.base, self.image, self.device = args, base, image, device
        self.started = time.perf_counter()
        self.outcomes = [Outcome(variant) for variant in variants(args.dtype)]
        self.engine: SVDEngine | None = None
        self.engine_key: tuple | None = None
        self.engine_load = 0.0
        """Seconds the loaded engine took to load and compile."""
        self.stock: Row | None = None

    def run(self) -> list[Outcome]:
        for outcome in self.outcomes:
            outcome.status = self.reason_to_skip(outcome.variant) or "running"
            self.write()
            if outcome.status == "running":
                self.measure(outcome)
                self.write()
            print(f"{outcome.variant.name}: {summary(outcome)}", flush=True)
        self.close_engine()
        return self.outcomes

    def reason_to_skip(self, variant: Variant) -> str | None:
        unknown = sorted(set(variant.request) - set(PARAMETERS))
        if unknown:
            return f"not measured: this build's contract has no request field {unknown[0]}"
        if variant.needs and importlib.util.find_spec(variant.needs) is None:
            return f"not measured: {variant.needs} is not installed"
        elapsed = time.perf_counter() - self.started
        if elapsed + self.estimate(variant) > self.args.budget:
            return f"not measured: would not end within the {self.args.budget:.0f} s budget ({elapsed:.0f} s spent)"
        return None

    def estimate(self, variant: Variant) -> float:
        """Seconds the row will take, from the rows measured so far (0 before there is one like it)."""
        like = [o.wall for o in self.outcomes if o.status == "measured" and not o.variant.stock
                and (o.compile_seconds is not None) == (self.key(variant) != self.engine_key)]
        return 0.0 if variant.stock or not like else max(like)

    @staticmethod
    def key(variant: Variant) -> tuple:
        return tuple(sorted(variant.engine.items()))

    def measure(self, outcome: Outcome) -> None:
        variant, started = outcome.variant, time.perf_counter()
        try:
            if variant.stock:
                outcome.row = self.measure_stock(variant)
            else:
                if self.key(variant) != self.engine_key:
                    outcome.compile_seconds = self.load_engine(variant)
                outcome.row = measure_engine(Row(variant.name, self.engine_load), self.engine, self.image, self.device,
                                             1, 1, **variant.request)
            compare(outcome.row, self.stock, None)
            if outcome.row is not self.stock:
                outcome.row.frames = None  # only the anchor's frames are compared with
            outcome.status = "measured"
        except Exception as error:  # one failing row must not cost the rows after it
            traceback.print_exc()
            outcome.status = f"failed: {type(error).__name__}: {' '.join(str(error).split())[:300]}"
            self.close_engine()
        outcome.wall = time.perf_counter() - started

    def measure_stock(self, variant: Variant) -> Row:
        config = EngineConfig.from_parameters({**parameters(self.base), **variant.engine})
        request = parse_request(self.image, {"seed": SEED}, config, model_num_frames=config.default_num_frames)
        self.stock = measure_planned(Planned(variant.name, config, DTYPES[config.dtype], 1, 1), request, self.image, self.device)
        return self.stock

    def load_engine(self, variant: Variant) -> float:
        """Load and compile the variant's engine in place of the one loaded; returns the compile seconds."""
        self.close_engine()
        started = time.perf_counter()
        self.engine = SVDEngine.load(EngineConfig.from_parameters({**parameters(self.base), **variant.engine}))
        self.engine_load, self.engine_key = time.perf_counter() - started, self.key(variant)
        return self.engine.compile_seconds

    def close_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = self.engine_key = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def write(self) -> None:
        """The table as it stands into --out (benchmarks.md and rows.json)."""
        out = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        source, width, height, frames, chunk = SIZES[self.args.size]
        body = (f"{source} weights, {width}×{height}, {frames} frames, decode chunk {chunk}, MP4 output, seed {SEED}; "
                f"per row one warm-up and one timed run of {self.args.steps} denoising steps. "
                f"**End to end at {REPORTED_STEPS} steps is built** from the timed run's phases: image encode + "
                f"{REPORTED_STEPS} × step time (with feature caching, its full and cached steps as a {REPORTED_STEPS}-step "
                f"run has them) + VAE decode + video encode. Fast path: {describe(self.base)}.\n\n{self.table()}")
        write_section(f"{SECTION}-{self.device.type}-{self.args.size}",
                      f"GPU benchmark kit ({self.device.type.upper()}, {self.args.size})", body, doc=out / "benchmarks.md")
        rows = [{"variant": asdict(o.variant), "status": o.status, "compile_seconds": o.compile_seconds, "wall": o.wall,
                 "row": None if o.row is None else {k: v for k, v in vars(o.row).items() if k != "frames"}}
                for o in self.outcomes]
        (out / "rows.json").write_text(json.dumps(rows, indent=1))

    def table(self) -> str:
        header = ["variant", "request", f"end to end, {REPORTED_STEPS} steps (s, built)", "vs stock",
                  "CLIP + VAE encode (s)", "step p50 (s)", f"end to end, {self.args.steps} steps (s, measured)",
                  "VAE decode (s)", "video encode (s)", "peak GPU memory (GiB, allocated / reserved)",
                  "max abs diff vs stock", "PSNR vs stock (dB)", "load (s)", "compile (s)", "status"]
        anchor = built_seconds(self.outcomes[0])
        lines = []
        for outcome in self.outcomes:
            row, variant = outcome.row, outcome.variant
            fields = ", ".join(f"{k}={v}" for k, v in variant.request.items()) or "—"
            if row is None:
                lines.append([variant.name, fields] + ["—"] * 12 + [outcome.status])
                continue
            built = built_seconds(outcome)
            reused = not variant.stock and outcome.compile_seconds is None
            peak = f"{row.peak[0]:.1f} / {row.peak[1]:.1f}" if row.peak else f"n/a ({self.device.type})"
            lines.append([variant.name, fields, f"{built:.2f}", f"{anchor / built:.2f}×" if anchor else "—",
                          f"{row.phases.get('preparing', 0):.3f}", step_text(outcome), f"{statistics.median(row.e2e):.2f}",
                          f"{row.phases.get('decoding', 0):.3f}", f"{row.phases.get('encoding', 0):.3f}", peak,
                          "0" if variant.stock else row.max_diff, decibels(row.psnr_stock),
                          *(["(row above's engine)"] * 2 if reused else [f"{row.load:.1f}", "—" if variant.stock else
                                                                          f"{outcome.compile_seconds:.1f}"]), outcome.status])
        return markdown_table(header, lines)


def cache_interval(outcome: Outcome) -> int:
    return int(outcome.variant.request.get("cache_interval", 1))


def step_seconds(outcome: Outcome) -> tuple[float, float]:
    """Median seconds of a full step and of a cached one (the same without caching). The clock gives
    the duration of steps 2..N (step i, 0-based, is full when i is a multiple of the interval)."""
    interval, durations = cache_interval(outcome), outcome.row.steps
    full = [d for i, d in enumerate(durations, start=1) if i % interval == 0]
    cached = [d for i, d in enumerate(durations, start=1) if i % interval != 0]
    full_seconds = statistics.median(full) if full else statistics.median(durations)
    return full_seconds, statistics.median(cached) if cached else full_seconds


def built_seconds(outcome: Outcome) -> float | None:
    """End to end at REPORTED_STEPS steps from the measured phases (None when the row has no numbers)."""
    if outcome.row is None or not outcome.row.steps:
        return None
    full, cached = step_seconds(outcome)
    full_steps = math.ceil(REPORTED_STEPS / cache_interval(outcome))
    phases = outcome.row.phases
    return (phases.get("preparing", 0) + full_steps * full + (REPORTED_STEPS - full_steps) * cached
            + phases.get("decoding", 0) + phases.get("encoding", 0))


def step_text(outcome: Outcome) -> str:
    if not outcome.row.steps:
        return "—"
    full, cached = step_seconds(outcome)
    return f"{full:.3f}" if cache_interval(outcome) == 1 else f"{full:.3f} full, {cached:.3f} cached"


def summary(outcome: Outcome) -> str:
    built = built_seconds(outcome)
    return outcome.status if built is None else f"{built:.2f} s end to end at {REPORTED_STEPS} steps (built), {outcome.wall:.0f} s here"


def stale_packages() -> list[str]:
    """This checkout's packages whose imported copy (the wheel from .whl/, on the GPU box) differs from src/."""
    stale = []
    for package in ("svd_contract", "svd_engine"):
        imported = Path(importlib.import_module(package).__file__).parent
        tree = ROOT / "src" / package
        if imported.resolve() == tree.resolve():
            continue
        names = {p.relative_to(tree) for p in tree.glob("*.py")} | {p.relative_to(imported) for p in imported.glob("*.py")}
        if any(not (tree / n).exists() or not (imported / n).exists() or (tree / n).read_bytes() != (imported / n).read_bytes()
               for n in names):
            stale.append(package)
    return stale


def main(argv: list[str] | None = None) -> list[Outcome] | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="xt", help="xt (the GPU rows) or tiny (the CPU rehearsal)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                        help="the anchor's and the engine rows' precision (float32 for the CPU rehearsal: CPU float16 is slow)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="engine parameter for every engine row (config.pbtxt names), e.g. compile_backend=eager")
    parser.add_argument("--steps", type=int, default=MEASURED_STEPS, help="denoising steps of each measured run")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds: a row starts only if the rows so far say it ends within this")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "out" / "gpu-session"),
                        help="where benchmarks.md and rows.json go ($OUT when set)")
    parser.add_argument("--publish", type=Path, metavar="DIR",
                        help="copy the table in DIR/benchmarks.md (the folder the GPU box wrote to) into docs/benchmarks.md, and stop")
    parser.add_argument("--doc", type=Path, default=DOC, help="with --publish: the page to copy into")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2: the step time is measured between step ends")
    if args.publish:
        copy_section(args.publish / "benchmarks.md", SECTION, args.doc)
        return None
    stale = stale_packages()
    if stale:
        sys.exit(f"the installed {', '.join(stale)} differ from src/: run `make gpu-wheels` again before the kit")

    source, width, height, frames, chunk = SIZES[args.size]
    device = resolve_device(args.device)
    base = EngineConfig(model_source=source, device=str(device), dtype=args.dtype, default_width=width, default_height=height,
                        default_num_frames=frames, default_num_inference_steps=args.steps,
                        default_decode_chunk_size=chunk, default_video_format="mp4", fast_path="on")
    try:
        base = EngineConfig.from_parameters({**parameters(base), **dict(item.split("=", 1) for item in args.set)})
    except ValueError as error:
        parser.error(str(error))
    image = SAMPLE.read_bytes()
    outcomes = Session(args, base, image, device).run()
    print((args.out / "benchmarks.md").read_text())
    return outcomes


if __name__ == "__main__":
    main()
