"""perf_analyzer over HTTP and gRPC at concurrency 1..4 against the embedded server (`make bench-serve`).

Starts tritonserver for this repository (the CPU variant with the tiny model when no GPU is visible,
config.pbtxt otherwise), runs perf_analyzer with one of benchmarks/inputs/*.json, and writes the table to
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks import perf
from benchmarks.report import REPOSITORY, markdown_table, write_section

from svd_triton.launcher import ServerOptions, TritonServer, free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", choices=sorted(perf.REQUESTS), default="tiny",
                        help="which benchmarks/inputs/*.json request to send (xt and preview need a GPU)")
    parser.add_argument("--requests", type=int, default=8, help="requests per measurement window")
    parser.add_argument("--max-concurrency", type=int, default=4)
    args = parser.parse_args()

    options = ServerOptions(model_repository=REPOSITORY, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    rows = []
    with TritonServer(options, ready_timeout=1800) as server, tempfile.TemporaryDirectory() as folder:
        for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
            results = perf.run(url, protocol, perf.INPUTS / f"{args.input}.json", f"1:{args.max_concurrency}",
                               args.requests, Path(folder) / f"{protocol}.csv")
            for row in sorted(results, key=lambda r: int(r["Concurrency"])):
                rows.append([protocol, row["Concurrency"], f"{float(row['Inferences/Second']):.3f}",
                             f"{int(row['p50 latency']) / 1e6:.2f}", f"{int(row['p95 latency']) / 1e6:.2f}",
                             f"{int(row['Server Queue']) / 1e6:.2f}", f"{int(row['Server Compute Infer']) / 1e6:.2f}"])
    config = "configs/cpu.pbtxt" if server.cpu_only else "config.pbtxt"
    table = markdown_table(["protocol", "concurrency", "throughput (req/s)", "p50 (s)", "p95 (s)", "queue (s)",
                            "compute (s)"], rows)
    body = (f"perf_analyzer (tritonclient 2.51.0) against the embedded server ({config}), request "
            f"`benchmarks/inputs/{args.input}.json`, count windows of {args.requests} requests.\n\n{table}")
    print(body)
    write_section(f"perf-{args.input}", f"perf_analyzer, {args.input} request", body)


if __name__ == "__main__":
    main()
