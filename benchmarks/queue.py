"""The gateway replicas' shared work queue on PostgreSQL: claim latency (submit to `processing` with idle
replicas) and takeover time after SIGKILL, each with LISTEN/NOTIFY and with polling only, and the throughput
of a burst of jobs through 3 replicas vs 1 at the same total concurrency.

Starts a throwaway PostgreSQL cluster (Debian's), the embedded tritonserver (streaming CPU variant, tiny
model) and `svd-triton gateway` processes on free ports, all on this machine. Claim latency: jobs are
submitted one at a time through an API-only replica (--concurrency 0) to two idle workers, and measured as
started_at - created_at in the store (one clock). Takeover: a job runs on one of two replicas with the
default lease (15 s) and heartbeat (5 s); that replica is SIGKILLed; measured from the kill, and from its
last lease's expiry, to the job running again on the other. Throughput: `--jobs` one-step 2-frame 64×64 jobs
submitted at once, until all have succeeded. Not a test: numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import base64
import math
import statistics
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import replicate
import sqlalchemy

from benchmarks.report import ROOT, markdown_table, write_section
from svd_gateway.store import Job
from tests.support import TOKEN, start_server
from tests.support.gateways import GatewayProcess
from tests.support.postgres import throwaway_postgres
from tests.support.waiting import until

SAMPLE = ROOT / "src" / "svd_triton" / "data" / "sample.png"
QUICK = {"num_frames": 2, "width": 64, "height": 64, "num_inference_steps": 1}
"""The least the model does: the queue's own costs show."""
LONG = {"num_frames": 4, "width": 64, "height": 64, "num_inference_steps": 100}


class Bench:
    def __init__(self, triton, server: str, folder: Path):
        self.triton, self.server, self.folder = triton, server, folder
        self.image = base64.b64encode(SAMPLE.read_bytes()).decode()
        self.count = 0

    def database(self) -> str:
        self.count += 1
        name = f"bench_{self.count}"
        with sqlalchemy.create_engine(self.server, isolation_level="AUTOCOMMIT").connect() as connection:
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
        return self.server.rsplit("/", 1)[0] + "/" + name

    def replicas(self, stack: ExitStack, database: str, specs: list[tuple[str, list[str]]]) -> list[GatewayProcess]:
        started = []
        for name, flags in specs:
            replica = GatewayProcess("--triton-url", self.triton.grpc_url, "--token", TOKEN, "--data-dir",
                                     str(self.folder / f"data{self.count}"), "--database-url", database,
                                     "--replica-id", name, *flags, log=self.folder / f"{name}{self.count}.log")
            stack.callback(replica.stop)
            started.append(replica.launch())
        return [replica.wait_ready() for replica in started]

    def client(self, replica: GatewayProcess) -> replicate.Client:
        client = replicate.Client(api_token=TOKEN, base_url=replica.url)
        client.poll_interval = 0.05
        return client

    def submit(self, replica: GatewayProcess, params: dict) -> str:
        return self.client(replica).predictions.create(version="any", input={"image": self.image, **params}).id

    def claim_latency(self, wake: str, jobs: int) -> list[float]:
        database = self.database()
        with ExitStack() as stack:
            front, *_ = self.replicas(stack, database, [("front", ["--concurrency", "0"]),
                                                        *((f"worker{i}", ["--wake", wake]) for i in range(2))])
            latencies = []
            for _ in range(jobs):
                job_id = self.submit(front, QUICK)
                done = until(lambda: (found := job(database, job_id)).status == "succeeded" and found, "a job",
                             interval=0.02)
                latencies.append((done.started_at - done.created_at).total_seconds())
            return latencies

    def takeover(self, wake: str) -> tuple[float, float]:
        database = self.database()
        with ExitStack() as stack:
            names = ["r0", "r1"]
            replicas = dict(zip(names, self.replicas(stack, database, [(name, ["--wake", wake, "--concurrency", "1"])
                                                                       for name in names])))
            job_id = self.submit(replicas["r0"], LONG)
            running = until(lambda: (found := job(database, job_id)).status == "running" and found, "the job")
            last_lease = job(database, job_id).lease_expires_at
            killed = time.time()
            replicas[running.worker].kill()
            again = until(lambda: (found := job(database, job_id)).attempts == 2 and found.status == "running"
                          and found, "the takeover", interval=0.02)
            survivor = next(name for name in names if name != running.worker)
            self.client(replicas[survivor]).predictions.cancel(job_id)
            restarted = utc_seconds(again.started_at)
            return restarted - killed, restarted - utc_seconds(last_lease)

    def throughput(self, replicas: int, concurrency: int, jobs: int) -> float:
        database = self.database()
        with ExitStack() as stack:
            gateways = self.replicas(stack, database, [(f"t{i}", ["--concurrency", str(concurrency)])
                                                       for i in range(replicas)])
            client = self.client(gateways[0])
            started = time.perf_counter()
            ids = [client.predictions.create(version="any", input={"image": self.image, **QUICK}).id for _ in range(jobs)]
            until(lambda: all_done(database, ids), "the burst", seconds=7200)
            return jobs / (time.perf_counter() - started)


def utc_seconds(moment: datetime) -> float:
    """The store's naive UTC datetimes as Unix time."""
    return moment.replace(tzinfo=timezone.utc).timestamp()


def job(database: str, job_id: str) -> Job:
    engine = sqlalchemy.create_engine(database)
    with engine.connect() as connection:
        row = connection.execute(sqlalchemy.select(*Job.__table__.columns).where(Job.id == job_id)).one()
    engine.dispose()
    return Job(**row._mapping)


def all_done(database: str, ids: list[str]) -> bool:
    engine = sqlalchemy.create_engine(database)
    with engine.connect() as connection:
        statuses = dict(connection.execute(sqlalchemy.select(Job.id, Job.status)).all())
    engine.dispose()
    failed = [job_id for job_id in ids if statuses.get(job_id) in ("failed", "canceled")]
    if failed:
        raise SystemExit(f"{len(failed)} jobs did not succeed")
    return all(statuses.get(job_id) == "succeeded" for job_id in ids)


def seconds(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[math.ceil(0.9 * len(values)) - 1]  # nearest rank
    return f"{statistics.median(values):.2f} (p90 {p90:.2f}, max {values[-1]:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--claims", type=int, default=20, help="jobs per claim-latency run")
    parser.add_argument("--takeovers", type=int, default=2, help="SIGKILL takeovers per wake mode")
    parser.add_argument("--jobs", type=int, default=200, help="jobs in the throughput burst")
    parser.add_argument("--concurrency", type=int, default=6, help="total generations at once, all replicas together")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="queue-bench-") as folder, throwaway_postgres() as server, \
            start_server(stream=True) as triton:
        bench = Bench(triton, server, Path(folder))
        rows = []
        for wake in ("notify", "poll"):
            latency = bench.claim_latency(wake, args.claims)
            takeovers = [bench.takeover(wake) for _ in range(args.takeovers)]
            rows.append([wake, seconds(latency), seconds([kill for kill, _ in takeovers]),
                         seconds([expiry for _, expiry in takeovers])])
            print(rows[-1], flush=True)
        latency_table = markdown_table(["wake", "claim latency, s: median (p90, max)", "takeover after SIGKILL, s",
                                        "of which after lease expiry, s"], rows)
        rates = []
        for replicas in (1, 3):
            rate = bench.throughput(replicas, args.concurrency // replicas, args.jobs)
            rates.append([replicas, args.concurrency // replicas, args.jobs, f"{rate:.2f}"])
            print(rates[-1], flush=True)
        rate_table = markdown_table(["replicas", "concurrency each", "jobs", "jobs/s"], rates)
    body = (f"{latency_table}\n\n{rate_table}\n\nClaim latency: {args.claims} one-step 2-frame 64×64 jobs, one at a time, "
            "through an API-only replica (`--concurrency 0`) to two idle workers; `poll` is `--wake poll` at the "
            "default `--poll-seconds 2`. Takeover: default lease 15 s, heartbeat 5 s, from the SIGKILL (and from "
            f"the dead replica's last lease expiry) to the job running again, {args.takeovers} runs per mode. "
            f"Throughput: {args.jobs} one-step 2-frame 64×64 jobs submitted at once through one replica, timed "
            "until all had succeeded.")
    print(body)
    if not args.no_write:
        write_section("queue", "Gateway replicas: shared queue (PostgreSQL)", body)


if __name__ == "__main__":
    main()
