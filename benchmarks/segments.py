"""What longer, smoother and looping videos cost, and whether colour matching curbs segment drift.

Times the engine (by default the tiny random-weight model) for a plain request and for each feature alone and
combined: segments repeat the whole pipeline, interpolation and loops add to encoding. Then measures
drift over chained segments with and without `match_segment_colors`: how far each segment's colour
statistics move from the first segment's, and how large the jump at each seam is compared with an
ordinary step between neighbouring frames. Random weights make no meaningful motion, so these are
statistics of colour and frame-to-frame change only, not of content or identity.
"""
from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import replace

import numpy as np

from benchmarks.report import ROOT, markdown_table, write_section

SAMPLE = ROOT / "src" / "svd_triton" / "data" / "sample.png"
FEATURES = [  # label, request values
    ("plain", {}),
    ("segments 2", {"segments": 2}),
    ("segments 3", {"segments": 3}),
    ("interpolate 2", {"interpolate": 2}),
    ("interpolate 4", {"interpolate": 4}),
    ("loop pingpong", {"loop": "pingpong"}),
    ("loop crossfade", {"loop": "crossfade"}),
    ("segments 3, interpolate 2, pingpong", {"segments": 3, "interpolate": 2, "loop": "pingpong"}),
]


def cost_rows(engine, image: bytes, base: dict, repeats: int) -> list[list]:
    rows, plain = [], None
    engine.generate([engine.parse(image, seed=0, **base)])  # warm-up: first-call costs are no feature's
    for label, values in FEATURES:
        runs = []
        for seed in range(repeats):
            [result] = engine.generate([engine.parse(image, seed=seed, **base, **values)])
            runs.append(result)
        total = statistics.median(sum(r.timings.values()) for r in runs)
        device = statistics.median(r.timings["preparing"] + r.timings["denoising"] + r.timings["decoding"] for r in runs)
        encoding = statistics.median(r.timings["encoding"] for r in runs)
        plain = plain or total
        rows.append([label, len(runs[0].frames), runs[0].fps, f"{device:.2f}", f"{encoding:.2f}", f"{total:.2f}",
                     f"{total / plain:.2f}×"])
    return rows


def drift(frames: np.ndarray, num_frames: int, segments: int) -> dict[str, float]:
    """Colour distance of the last segment from the first, and seam jumps relative to ordinary steps."""
    step = num_frames - 1
    # generated frames only: each segment's own frames after the one it starts from
    first, last = frames[1:num_frames].astype(np.float32), frames[-step:].astype(np.float32)
    mean_shift = float(np.abs(last.mean((0, 1, 2)) - first.mean((0, 1, 2))).mean())
    spread_ratio = float((last.std((0, 1, 2)) / np.maximum(first.std((0, 1, 2)), 1e-3)).mean())
    differences = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean((1, 2, 3))
    seams = [k * step for k in range(1, segments)]  # frame seam → seam + 1 crosses into the next segment
    seam_jump = float(np.mean(differences[seams]))
    ordinary = float(np.mean(np.delete(differences, seams)))
    return {"mean_shift": mean_shift, "spread_ratio": spread_ratio, "seam_ratio": seam_jump / ordinary}


def drift_rows(engine, image: bytes, base: dict, segments: int, seeds: int) -> list[list]:
    from svd_engine import SVDEngine

    rows = []
    for matched in (False, True):
        variant = SVDEngine(engine.pipeline, replace(engine.config, match_segment_colors=matched), engine.fast_path)
        measured = []
        for seed in range(seeds):
            [result] = variant.generate([variant.parse(image, seed=seed, segments=segments, video_format="frames", **base)])
            measured.append(drift(result.frames, base["num_frames"], segments))
        rows.append(["on" if matched else "off"] + [f"{statistics.mean(m[key] for m in measured):.2f}"
                                                    for key in ("mean_shift", "spread_ratio", "seam_ratio")])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="width and height")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--drift-segments", type=int, default=4)
    parser.add_argument("--drift-seeds", type=int, default=3)
    parser.add_argument("--model-source", default="tiny", help="tiny, random-xt, or real weights (a folder, s3://...)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)

    from svd_engine import SVDEngine

    engine = SVDEngine.load(model_source=args.model_source, device=args.device, max_segments=args.drift_segments)
    image = SAMPLE.read_bytes()
    base = {"width": args.size, "height": args.size, "num_frames": args.frames, "num_inference_steps": args.steps}
    load = os.getloadavg()[0]  # the cost table is only as clean as the machine was quiet
    costs = markdown_table(["request", "frames", "fps", "device s", "encoding s", "total s", "vs plain"],
                           cost_rows(engine, image, base, args.repeats))
    drifts = markdown_table(["match_segment_colors", "colour mean shift, last vs first segment (levels)",
                             "spread ratio, last / first", "seam jump / ordinary step"],
                            drift_rows(engine, image, base, args.drift_segments, args.drift_seeds))
    body = (f"Engine only, model `{args.model_source}` on {engine.device.type.upper()}, {args.size}×{args.size}, {args.frames} frames, "
            f"{args.steps} steps, mp4, median of {args.repeats} seeds. \"device s\" is preparing + denoising + "
            "decoding (every segment); \"encoding s\" includes interpolation (ffmpeg `minterpolate`) and looping.\n\n"
            f"{costs}\n\n1-minute load average at the end of the timings: {load:.1f} on {os.cpu_count()} cores.\n\n"
            f"Drift over {args.drift_segments} chained segments, mean of {args.drift_seeds} seeds, same settings. "
            "Colour mean shift: mean absolute difference of the per-channel means of the last and the first "
            "segment (0–255 levels); spread ratio: their per-channel standard deviations' ratio (1 = no change); "
            "seam jump / ordinary step: mean absolute change across a seam over the mean change between "
            "neighbouring frames inside segments (1 = seams as smooth as the clip). Random weights make no real "
            "motion or subject, so this measures colour drift and seam smoothness only, not identity drift.\n\n"
            f"{drifts}")
    print(body)
    if not args.no_write:
        write_section("segments", "Segments, interpolation and loops", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
