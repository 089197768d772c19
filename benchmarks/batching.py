"""What dynamic batching buys: throughput and latency at concurrency 1, 2 and 4, batching on and off.

Runs the real embedded tritonserver (CPU variant, tiny model) twice from a temporary copy of the
model repository, once as configured and once with `dynamic_batching` removed, and drives it with
concurrent gRPC clients. Also times the engine alone: seconds per denoising step by batch size,
which is what dropping a cancelled sample from a running batch would save.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import ROOT, markdown_table, write_section

from svd_triton import SVDClient
from svd_triton.launcher import ServerOptions, TritonServer, free_port

SAMPLE = ROOT / "src" / "svd_triton" / "data" / "sample.png"


def repository_copy(folder: Path, batching: bool) -> Path:
    target = folder / ("batching-on" if batching else "batching-off")
    shutil.copytree(ROOT / "model_repository", target, ignore=shutil.ignore_patterns("__pycache__"))
    if not batching:
        config = target / "svd_xt" / "configs" / "cpu.pbtxt"
        config.write_text(re.sub(r"dynamic_batching \{.*?\n\}\n", "", config.read_text(), flags=re.S))
    return target


def load(server: TritonServer, concurrency: int, requests: int, params: dict) -> dict:
    image = SAMPLE.read_bytes()
    clients = [SVDClient(server.grpc_url, protocol="grpc") for _ in range(concurrency)]

    def worker(index: int) -> list[float]:
        return [clients[index].generate(image, seed=n, **params).seconds for n in range(requests // concurrency)]

    stats = clients[0]._client.get_inference_statistics("svd_xt", as_json=True)["model_stats"][0]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        latencies = [s for chunk in pool.map(worker, range(concurrency)) for s in chunk]
    wall = time.perf_counter() - started
    after = clients[0]._client.get_inference_statistics("svd_xt", as_json=True)["model_stats"][0]
    inferences = int(after["inference_count"]) - int(stats.get("inference_count", 0))
    executions = int(after["execution_count"]) - int(stats.get("execution_count", 0))
    return {"throughput": len(latencies) / wall, "p50": statistics.median(latencies), "batch": inferences / executions}


def server_rows(args, params) -> list[list]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="svd-batching-") as folder:
        for batching in (True, False):
            options = ServerOptions(model_repository=repository_copy(Path(folder), batching), http_port=free_port(),
                                    grpc_port=free_port(), metrics_port=free_port())
            with TritonServer(options, ready_timeout=300) as server:
                load(server, 1, 3, params)  # warm-up
                for concurrency in (1, 2, 4):
                    m = load(server, concurrency, args.requests, params)
                    rows.append(["on" if batching else "off", concurrency, args.requests, f"{m['throughput']:.3f}",
                                 f"{m['p50']:.2f}", f"{m['batch']:.2f}"])
                    print(rows[-1], file=sys.stderr)
    return rows


def engine_rows(args) -> list[list]:
    from svd_engine import SVDEngine

    engine = SVDEngine.load(model_source="tiny", device="cpu")
    image = SAMPLE.read_bytes()
    rows = []
    for size in (1, 2, 4):
        requests = [engine.parse(image, seed=n, width=args.width, height=args.height, num_frames=args.frames,
                                 num_inference_steps=args.steps) for n in range(size)]
        engine.generate(requests)  # warm-up
        denoising = statistics.median(engine.generate(requests)[0].timings["denoising"] for _ in range(3))
        rows.append([size, f"{denoising / args.steps:.3f}", f"{denoising / args.steps / size:.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=8, help="requests per concurrency level")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    params = {"width": args.width, "height": args.height, "num_frames": args.frames, "num_inference_steps": args.steps}

    server_table = markdown_table(["batching", "concurrency", "requests", "throughput (req/s)", "p50 latency (s)",
                                   "requests per execution"], server_rows(args, params))
    engine_table = markdown_table(["batch size", "s per denoising step", "s per step per request"], engine_rows(args))
    body = (f"Tiny model on the embedded server (configs/cpu.pbtxt: max_batch_size 4, 100 ms queue delay), "
            f"{args.width}×{args.height}, {args.frames} frames, {args.steps} steps, MP4 output, gRPC clients.\n\n"
            f"{server_table}\n\nEngine alone, one pipeline call per batch (same shapes):\n\n{engine_table}\n\n"
            "A cancelled request that shares a batch keeps its place until the batch's last step (the "
            "stock denoising loop keeps the batch's conditioning as locals); the second table is the "
            "most dropping it could save per remaining step. A batch whose requests are all cancelled "
            "stops at the next step.")
    print(body)
    write_section("batching", "Dynamic batching (CPU, tiny model)", body)


if __name__ == "__main__":
    main()
