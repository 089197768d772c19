"""Reliability report: the hostile-input matrix and a load/soak run against the embedded server.

    python -m benchmarks.reliability                      # 500 requests at concurrency 16 (make soak)
    python -m benchmarks.reliability --requests 60        # shorter

Every request carries its own seed: each must come back as a decodable video with that seed, or as
a clear error (the queue is bounded, so some are refused with UNAVAILABLE at this concurrency);
none may be lost or answered twice. Server memory (tritonserver and its Python-backend processes)
is read before and after. Writes docs/reliability.md.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import statistics
import time
from dataclasses import dataclass, field

import psutil

from benchmarks.report import REPOSITORY, ROOT, environment, markdown_table

from svd_triton import SVDClient, SVDClientError, UnavailableError
from svd_triton.launcher import ServerOptions, TritonServer, free_port
from tests.support.hostile import CASES, VALID, leaks  # the matrix lives with the tests that assert it

SMALL = {"width": 64, "height": 64, "num_frames": 2, "num_inference_steps": 1, "video_format": "mp4"}
RETRIES = 50
SAMPLE = ROOT / "src" / "svd_triton" / "data" / "sample.png"


def server_rss_mb(server_pid: int) -> float:
    """Resident memory of tritonserver and its children (the Python-backend stubs), in MiB."""
    server = psutil.Process(server_pid)
    return sum(process.memory_info().rss for process in [server, *server.children()]) / 2**20


@dataclass
class LoadReport:
    requests: int
    concurrency: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: collections.Counter = field(default_factory=collections.Counter)
    wrong: list[str] = field(default_factory=list)
    """Answers that were neither the video asked for nor a clear error: must stay empty."""
    rss_before: float = 0.0
    rss_after: float = 0.0
    queue_refusals: int = 0
    """UNAVAILABLE 'queue full' answers that the client retried after a short wait."""

    @property
    def videos(self) -> int:
        return len(self.latencies)

    def percentile(self, q: float) -> float:
        return statistics.quantiles(self.latencies, n=100)[int(q) - 1] if len(self.latencies) > 1 else float("nan")


def run_load(server: TritonServer, requests: int, concurrency: int, token: str | None = None) -> LoadReport:
    """`requests` generations over gRPC from `concurrency` threads, each with a unique seed."""
    image = SAMPLE.read_bytes()
    seeds = list(range(10_000, 10_000 + requests))
    report = LoadReport(requests, concurrency, 0.0, rss_before=server_rss_mb(server.process.pid))
    answered = collections.Counter()

    def one(seed: int):
        """Like a well-behaved client: when the queue is full, wait a little and try again (bounded)."""
        with SVDClient(server.grpc_url, protocol="grpc", token=token, timeout=300) as svd:
            for attempt in range(RETRIES + 1):
                try:
                    return seed, svd.generate(image, seed=seed, **SMALL)
                except UnavailableError as error:
                    if "queue" not in str(error) or attempt == RETRIES:
                        return seed, error
                    report.queue_refusals += 1
                    time.sleep(0.2 * (attempt + 1))
                except SVDClientError as error:
                    return seed, error

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for seed, outcome in pool.map(one, seeds):
            answered[seed] += 1
            if isinstance(outcome, SVDClientError):
                report.errors[f"{type(outcome).__name__}: {str(outcome).split(': ')[-1][:60]}"] += 1
                if leaks(str(outcome)):
                    report.wrong.append(f"seed {seed}: error leaks {leaks(str(outcome))}")
            elif outcome.seed != seed or outcome.video_format != "mp4" or len(outcome.video) < 100:
                report.wrong.append(f"seed {seed}: got seed {outcome.seed}, {outcome.video_format}, {len(outcome.video)} bytes")
            else:
                report.latencies.append(outcome.seconds)
    report.seconds = time.perf_counter() - started
    report.wrong += [f"seed {s} answered {n} times" for s, n in answered.items() if n != 1]
    report.wrong += [f"seed {s} never answered" for s in seeds if s not in answered]
    report.rss_after = server_rss_mb(server.process.pid)
    return report


def matrix_rows(server: TritonServer) -> list[list]:
    from tests.support.kserve import infer, video_bytes
    from tritonclient.utils import InferenceServerException

    rows = []
    for case, (tensors, field_name) in CASES.items():
        for protocol in ("http", "grpc"):
            try:
                infer(server, protocol, tensors, token=server.options.token)
                result, message = "ACCEPTED (wrong)", ""
            except InferenceServerException as error:
                message = error.message()
                named = field_name in message and not leaks(message)
                result = f"{error.status()}" + ("" if named else " (field not named / leak)")
            after = "ok" if video_bytes(infer(server, protocol, VALID, token=server.options.token)) else "FAILED"
            rows.append([case, protocol, result, message[:90].replace("|", "/"), after])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    token = "reliability-token"
    options = ServerOptions(model_repository=REPOSITORY, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), token=token)
    with TritonServer(options, ready_timeout=300) as server:
        rows = matrix_rows(server)
        run_load(server, 8, 4, token)  # warm-up before reading memory
        load = run_load(server, args.requests, args.concurrency, token)
    command = f"python -m benchmarks.reliability --requests {args.requests} --concurrency {args.concurrency}"
    errors = "; ".join(f"{n} × {kind}" for kind, n in load.errors.most_common()) or "none"
    text = f"""# Reliability

Written by `{command}` (`make soak`) against the embedded server (configs/cpu.pbtxt, tiny model,
bearer token). Measured on {environment()}. The same checks run in CI: `tests/integration/test_hostile.py` (the
matrix over HTTP and gRPC), `tests/integration/test_reliability.py` (a shorter load run), `tests/integration/test_faults.py`
(the backend process killed mid-request), `tests/unit/test_engine.py` (out-of-memory handling).

## Hostile input ({len(CASES)} cases × 2 protocols)

Each case must be refused with INVALID_ARG (HTTP 400 / gRPC INVALID_ARGUMENT), by the model or by
Triton's own input checks, with a message that names the input and leaks no traceback, path or model
source; the valid request sent right after must succeed.

{markdown_table(["case", "protocol", "status", "message (start)", "next valid request"], rows)}

## Load ({load.requests} requests, concurrency {load.concurrency}, 64×64, 2 frames, 1 step)

| measure | value |
|---|---|
| videos returned | {load.videos} |
| clear errors (after retries) | {sum(load.errors.values())} ({errors}) |
| queue-full refusals, retried after a short wait | {load.queue_refusals} |
| lost, duplicated or wrong answers | {len(load.wrong)} |
| throughput | {load.videos / load.seconds:.2f} videos/s over {load.seconds:.1f} s |
| latency p50 / p95 / p99 | {load.percentile(50):.2f} / {load.percentile(95):.2f} / {load.percentile(99):.2f} s |
| server memory before → after | {load.rss_before:.0f} → {load.rss_after:.0f} MiB |

The queue holds 8 waiting requests behind a batch of 4 (configs/cpu.pbtxt): at concurrency 16 the
excess is refused at once with UNAVAILABLE "Exceeds maximum queue size" instead of waiting; the load
generator behaves like a well-mannered client and retries those after 0.2 s × attempt (at most
{RETRIES} times), so every request ends with its video.

## Faults

| fault | what happens | test |
|---|---|---|
| device out of memory in a batch | the batch is retried one request at a time; a request that does not fit alone gets UNAVAILABLE "not enough memory: …"; memory is released and the next request runs | tests/unit/test_engine.py (a real torch.OutOfMemoryError injected by a forward hook) |
| Python-backend process killed mid-request | that request fails with "Stub process 'svd_xt_0_0' is not healthy."; Triton 2.51 does not restart the process and keeps reporting the model ready, so `svd-triton serve` (explicit model control) unloads and reloads the model within seconds and later requests are served | tests/integration/test_faults.py |
| client gone (cancel, timeout, closed stream) | work stops at the next denoising step | tests/integration/test_streaming.py |
| queue full / waited too long | UNAVAILABLE at once | tests/integration/test_streaming.py |
"""
    (ROOT / "docs" / "reliability.md").write_text(text)
    print(text)
    if load.wrong:
        raise SystemExit(f"{len(load.wrong)} wrong answers: {load.wrong[:5]}")


if __name__ == "__main__":
    main()
