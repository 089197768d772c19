"""The GPU benchmark kit: one offline command on a GPU box measures the GPU rows, the rows that matter
most first, each written out as soon as measured.

    bash scripts/gpu_session.sh                      # on the GPU box (make gpu-session): random-xt,
                                                     # 1024×576, 25 frames; the table goes to $OUT or out/gpu-session
    python -m benchmarks.gpu_session --size tiny     # the CPU rehearsal (tests/deploy/test_gpu_session.py)
    python -m benchmarks.gpu_session --publish DIR   # copy DIR/benchmarks.md's table into docs/benchmarks.md

Rows, in this order: stock diffusers float16 (the anchor); our engine float16 with the fast path
compiled (which is also the `quality` preset: the deployment's defaults); then, on that same engine (request
fields: no new engine, no compile), feature caching (`cache_interval=3`, `cache_branch_id=0`), the presets
`balanced` and `fast`, and `fast` with feature caching; bfloat16; FP8 UNet linear layers (torchao). A row
whose engine or request field this build lacks is listed as not measured, with why. A row starts only if the
rows so far say it ends within `--budget` seconds; a row that fails is listed with its error and the run goes on.

Each row: one warm-up run, then one timed run of `--steps` denoising steps (few, to fit the budget); a
preset row's timed run is its whole request (the preset's own 15 or 10 steps). The end-to-end time per
request is built from the measured phases: image encode + each of the request's steps at the median time
of its kind + VAE decode + video encode. A request is 25 steps, a preset's its own; the kinds are full
and cached steps with feature caching, guided and conditional-only steps with a preset. So every row
reads against stock's 25 steps directly; the timed run's own end-to-end time is in the table too. The
engine compiles a conditional-only step's batch of 1 at load too (`compile_conditional`), so those steps
run compiled. After each row the table is rewritten in `--out`
(benchmarks.md, in docs/benchmarks.md's section format, and rows.json), so a run cut off by its time limit
still returns every row it finished.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import os
import statistics
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from benchmarks.fast_path import (
    SAMPLE,
    SEED,
    Planned,
    Row,
    compare,
    decibels,
    describe,
    measure_engine,
    measure_planned,
    parameters,
)
from benchmarks.report import DOC, ROOT, copy_section, markdown_table, write_section
from svd_contract import PARAMETERS
from svd_engine import EngineConfig, SVDEngine
from svd_engine.loading import DTYPES, resolve_device
from svd_engine.request import GenerationRequest, parse_request

SIZES = {  # source, width, height, frames, decode chunk
    "xt": ("random-xt", 1024, 576, 25, 8),
    "tiny": ("tiny", 64, 64, 4, 4),
}
MEASURED_STEPS = 6
"""Enough for a steady step time (and, at cache interval 3, full and cached steps); few enough to fit."""
REPORTED_STEPS = 25
"""SVD-XT's own step count: the end-to-end column is built for it (a preset's row, for the preset's own)."""
SECTION = "gpu-session"
CACHING: dict[str, object] = {"cache_interval": 3, "cache_branch_id": 0}


@dataclass(frozen=True)
class Steps:
    """The denoising steps of one request. Each is of a kind: the whole UNet or (feature caching) its shallow
    branch, guided (the UNet on batch 2) or (a preset's final steps) conditional-only (batch 1)."""

    count: int
    cache_interval: int
    conditional: int

    @classmethod
    def of(cls, request: GenerationRequest) -> Steps:
        return cls(request.num_inference_steps, request.cache_interval, request.conditional_steps)

    def kind(self, step: int) -> tuple[bool, bool]:
        """(whole UNet, guided) for the 0-based `step`."""
        return step % self.cache_interval == 0, step < self.count - self.conditional

    def kinds(self) -> list[tuple[bool, bool]]:
        """The kinds this request has, guided first, whole before cached."""
        return sorted({self.kind(step) for step in range(self.count)}, key=lambda kind: (not kind[1], not kind[0]))

    def name(self, kind: tuple[bool, bool]) -> str:
        whole, guided = kind
        return " ".join(([("full" if whole else "cached")] if self.cache_interval > 1 else [])
                        + ([("guided" if guided else "conditional-only")] if self.conditional else []))

    def __str__(self) -> str:
        if not self.conditional:
            return f"{self.count}"
        return f"{self.count} ({self.count - self.conditional} guided + {self.conditional} conditional-only)"


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
        Variant(f"engine, compiled, {half}, feature caching", {"dtype": half}, CACHING),
        Variant(f"engine, compiled, {half}, preset balanced", {"dtype": half}, {"preset": "balanced"}),
        Variant(f"engine, compiled, {half}, preset fast", {"dtype": half}, {"preset": "fast"}),
        Variant(f"engine, compiled, {half}, preset fast, feature caching", {"dtype": half},
                {"preset": "fast", **CACHING}),
        Variant("engine, compiled, bfloat16", {"dtype": "bfloat16"}),
        Variant(f"engine, compiled, {half}, FP8 UNet linears", {"dtype": half, "fp8": "true"}, needs="torchao"),
    )


"""In order of importance. Feature caching and the presets run on the float16 engine before bfloat16: they
are request fields of the engine already compiled, so they cost seconds where the bfloat16 row costs a compile.
No row for the `quality` preset: it is the deployment's defaults, the compiled row itself."""


@dataclass
class Outcome:
    """One row of the table: measured numbers, or why there are none."""

    variant: Variant
    status: str = "not reached"
    """measured, running (when the file was last written), not measured: …, failed: …, not reached."""
    row: Row | None = None
    timed_steps: Steps | None = None
    """The timed run's steps: `--steps`, a preset's own."""
    request_steps: Steps | None = None
    """The steps of the request end to end is built for: REPORTED_STEPS, a preset's own."""
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
        """Seconds the row will take, from the rows measured so far (0 before there is one like it): those
        that compiled for a row that compiles, else those that reused the engine, scaled up to the row's steps."""
        like = [o for o in self.outcomes if o.status == "measured" and not o.variant.stock
                and (o.compile_seconds is not None) == (self.key(variant) != self.engine_key)]
        if variant.stock or not like:
            return 0.0
        steps = Steps.of(self.request(self.config(variant), variant)).count
        return max(o.wall * max(1.0, steps / o.timed_steps.count) for o in like if o.timed_steps)

    @staticmethod
    def key(variant: Variant) -> tuple:
        return tuple(sorted(variant.engine.items()))

    def measure(self, outcome: Outcome) -> None:
        variant, started = outcome.variant, time.perf_counter()
        try:
            config = self.config(variant)
            outcome.timed_steps = Steps.of(self.request(config, variant))
            reported = replace(config, default_num_inference_steps=REPORTED_STEPS)
            outcome.request_steps = Steps.of(self.request(reported, variant))
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
        config = self.config(variant)
        planned = Planned(variant.name, config, DTYPES[config.dtype], 1, 1)
        self.stock = measure_planned(planned, self.request(config, variant), self.image, self.device)
        return self.stock

    def config(self, variant: Variant) -> EngineConfig:
        return EngineConfig.from_parameters({**parameters(self.base), **variant.engine})

    def request(self, config: EngineConfig, variant: Variant) -> GenerationRequest:
        """The row's request as `config`'s engine reads it (a preset's fields filled in)."""
        return parse_request(self.image, {"seed": SEED, **variant.request}, config,
                             model_num_frames=config.default_num_frames)

    def load_engine(self, variant: Variant) -> float:
        """Load and compile the variant's engine in place of the one loaded; returns the compile seconds."""
        self.close_engine()
        started = time.perf_counter()
        self.engine = SVDEngine.load(self.config(variant))
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
                f"per row one warm-up and one timed run of {self.args.steps} denoising steps, a preset's row of its "
                f"whole request. **End to end per request is built** from the timed run's phases: image encode + each "
                f"of the request's steps ({REPORTED_STEPS}, a preset's own) at its kind's median time (with feature "
                f"caching full and cached steps, with a preset guided and conditional-only ones) + VAE decode + video "
                f"encode, so each row reads against stock's {REPORTED_STEPS} steps. Conditional-only steps run "
                f"compiled too (batch 1, compiled at load: `compile_conditional`). A preset's frames differ from "
                f"stock's by design (another schedule and step count). "
                f"Fast path: {describe(self.base)}.\n\n{self.table()}")
        write_section(f"{SECTION}-{self.device.type}-{self.args.size}",
                      f"GPU benchmark kit ({self.device.type.upper()}, {self.args.size})", body,
                      doc=out / "benchmarks.md")
        rows = [{"variant": asdict(o.variant), "status": o.status, "compile_seconds": o.compile_seconds, "wall": o.wall,
                 "steps": {"timed": o.timed_steps and asdict(o.timed_steps),
                           "request": o.request_steps and asdict(o.request_steps)},
                 "row": None if o.row is None else {k: v for k, v in vars(o.row).items() if k != "frames"}}
                for o in self.outcomes]
        (out / "rows.json").write_text(json.dumps(rows, indent=1))

    def table(self) -> str:
        header = ["variant", "request", "steps per request", "end to end per request (s, built)", "vs stock",
                  "CLIP + VAE encode (s)", "step p50 (s)", "end to end, timed run (s, measured)",
                  "VAE decode (s)", "video encode (s)", "peak GPU memory (GiB, allocated / reserved)",
                  "max abs diff vs stock", "PSNR vs stock (dB)", "load (s)", "compile (s)", "status"]
        anchor = built_seconds(self.outcomes[0])
        lines = []
        for outcome in self.outcomes:
            row, variant, timed, request = outcome.row, outcome.variant, outcome.timed_steps, outcome.request_steps
            fields = ", ".join(f"{k}={v}" for k, v in variant.request.items()) or "—"
            built = built_seconds(outcome)
            if row is None or timed is None or request is None or built is None:
                lines.append([variant.name, fields] + ["—"] * (len(header) - 3) + [outcome.status])
                continue
            reused = not variant.stock and outcome.compile_seconds is None
            peak = f"{row.peak[0]:.1f} / {row.peak[1]:.1f}" if row.peak else f"n/a ({self.device.type})"
            lines.append([variant.name, fields, f"{request}, {'all' if timed == request else timed.count} timed",
                          f"{built:.2f}", f"{anchor / built:.2f}×" if anchor else "—",
                          f"{row.phases.get('preparing', 0):.3f}", step_text(row.steps, timed, request),
                          f"{statistics.median(row.e2e):.2f}",
                          f"{row.phases.get('decoding', 0):.3f}", f"{row.phases.get('encoding', 0):.3f}", peak,
                          "0" if variant.stock else str(row.max_diff), decibels(row.psnr_stock),
                          *(["(row above's engine)"] * 2 if reused else
                            [f"{row.load:.1f}", "—" if variant.stock else f"{outcome.compile_seconds:.1f}"]),
                          outcome.status])
        return markdown_table(header, lines)


def step_seconds(durations: list[float], timed: Steps, request: Steps) -> dict[tuple[bool, bool], float]:
    """Median seconds of each kind of step the request has, from the timed run's step `durations`: those of
    its steps 2..N (0-based 1..N-1). A kind the timed run has none of (too few steps) counts as its median step."""
    by_kind = defaultdict(list)
    for step, seconds in enumerate(durations, start=1):
        by_kind[timed.kind(step)].append(seconds)
    return {kind: statistics.median(by_kind[kind] or durations) for kind in request.kinds()}


def built_seconds(outcome: Outcome) -> float | None:
    """End to end of the row's request (REPORTED_STEPS, a preset's own) from the measured phases (None
    when the row has no numbers)."""
    row, timed, request = outcome.row, outcome.timed_steps, outcome.request_steps
    if row is None or not row.steps or timed is None or request is None:
        return None
    seconds = step_seconds(row.steps, timed, request)
    return (row.phases.get("preparing", 0) + sum(seconds[request.kind(step)] for step in range(request.count))
            + row.phases.get("decoding", 0) + row.phases.get("encoding", 0))


def step_text(durations: list[float], timed: Steps, request: Steps) -> str:
    seconds = step_seconds(durations, timed, request)
    if len(seconds) == 1:
        return f"{next(iter(seconds.values())):.3f}"
    return ", ".join(f"{value:.3f} {request.name(kind)}" for kind, value in seconds.items())


def summary(outcome: Outcome) -> str:
    built = built_seconds(outcome)
    return (outcome.status if built is None else
            f"{built:.2f} s end to end per request ({outcome.request_steps} steps, built), {outcome.wall:.0f} s here")


def stale_packages() -> list[str]:
    """This checkout's packages whose imported copy (the wheel from .whl/, on the GPU box) differs from src/."""
    stale = []
    for package in ("svd_contract", "svd_engine"):
        imported = Path(importlib.import_module(package).__file__).parent
        tree = ROOT / "src" / package
        if imported.resolve() == tree.resolve():
            continue
        names = {p.relative_to(tree) for p in tree.glob("*.py")}
        names |= {p.relative_to(imported) for p in imported.glob("*.py")}
        if any(not (tree / n).exists() or not (imported / n).exists()
               or (tree / n).read_bytes() != (imported / n).read_bytes() for n in names):
            stale.append(package)
    return stale


def main(argv: list[str] | None = None) -> list[Outcome] | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="xt",
                        help="xt (the GPU rows) or tiny (the CPU rehearsal)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                        help="the anchor's and the engine rows' precision "
                             "(float32 for the CPU rehearsal: CPU float16 is slow)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="engine parameter for every engine row (config.pbtxt names), e.g. compile_backend=eager")
    parser.add_argument("--steps", type=int, default=MEASURED_STEPS,
                        help="denoising steps of each measured run (a preset's row runs the preset's own)")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds: a row starts only if the rows so far say it ends within this")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "out" / "gpu-session"),
                        help="where benchmarks.md and rows.json go ($OUT when set)")
    parser.add_argument("--publish", type=Path, metavar="DIR",
                        help="copy the table in DIR/benchmarks.md (the folder the GPU box wrote to) "
                             "into docs/benchmarks.md, and stop")
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
    base = EngineConfig(model_source=source, device=str(device), dtype=args.dtype, default_width=width,
                        default_height=height, default_num_frames=frames, default_num_inference_steps=args.steps,
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
