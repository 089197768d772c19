"""Cold start vs warm request for each release mechanism (svd_engine.SVDEngine.release / restore).

For each model and mechanism: load, one warm request, release (time, resident memory, weight bytes
left on the serving device), then one request that pays the cold start. On CPU the serving device
is host memory: `offload` moves weights to where they already are (frees nothing, restores
instantly), `reload` drops them and builds the pipeline again. For random-xt, "reload" rebuilds
random weights (initialisation, not a disk read), so its cold start is a stand-in for reading
~4.5 GB of safetensors; docs/deployment.md gives the GPU arithmetic.

    python -m benchmarks.keep_warm                 # tiny and random-xt (bfloat16, 64×64, 2 frames, 1 step)
    python -m benchmarks.keep_warm --models tiny
"""
from __future__ import annotations

import argparse
import gc
import multiprocessing
import time

import numpy as np
import psutil

from benchmarks.report import markdown_table, write_section

MODELS = {
    "tiny": {"model_source": "tiny", "dtype": "float32", "request": {"width": 64, "height": 64, "num_frames": 4,
                                                                     "num_inference_steps": 2}},
    "random-xt": {"model_source": "random-xt", "dtype": "bfloat16",
                  "request": {"width": 64, "height": 64, "num_frames": 2, "num_inference_steps": 1}},
}
MECHANISMS = ("offload", "reload")
HEADER = ["model", "mechanism", "load s", "warm request s", "release s", "RSS warm GiB", "RSS released GiB",
          "weights on device after release", "cold request s", "of which restore s"]


def rss_gib() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**30


def measure(model: str, mechanism: str) -> list:
    from svd_engine import SVDEngine

    spec = MODELS[model]
    started = time.perf_counter()
    engine = SVDEngine.load(model_source=spec["model_source"], dtype=spec["dtype"], device="cpu",
                            release_mechanism=mechanism, default_decode_chunk_size=2)
    load = time.perf_counter() - started
    image = np.full((64, 64, 3), 128, np.uint8)
    request = engine.parse(image, seed=1, **spec["request"])
    engine.generate([request])  # first call: lazy initialisation, not counted
    started = time.perf_counter()
    engine.generate([request])
    warm = time.perf_counter() - started
    warm_rss = rss_gib()
    release = engine.release()
    released_rss = rss_gib()
    left = engine.weight_bytes_on_device()
    started = time.perf_counter()
    restore = engine.restore()
    engine.generate([request])
    cold = time.perf_counter() - started
    engine.close()
    del engine
    gc.collect()
    return [model, mechanism, f"{load:.2f}", f"{warm:.2f}", f"{release:.3f}", f"{warm_rss:.2f}", f"{released_rss:.2f}",
            f"{left / 2**20:.0f} MiB", f"{cold:.2f}", f"{restore:.3f}"]


def main(argv: list[str] | None = None) -> list[list]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md as it is")
    args = parser.parse_args(argv)
    spawn = multiprocessing.get_context("spawn")
    rows = []
    for model in args.models:
        for mechanism in MECHANISMS:  # each in a fresh process, so RSS is that engine's alone
            with spawn.Pool(1) as pool:
                rows.append(pool.apply(measure, (model, mechanism)))
    table = markdown_table(HEADER, rows)
    print(table)
    if not args.no_write:
        body = (table + "\n\nOne process, one model at a time; RSS is this process's resident memory (psutil) after "
                "`gc.collect()`. Requests: " + "; ".join(f"{m}: {MODELS[m]['request']}" for m in args.models) + ".")
        write_section("keep-warm", "Keep-warm: cold start vs warm request per release mechanism (CPU)", body)
    return rows


if __name__ == "__main__":
    main()
