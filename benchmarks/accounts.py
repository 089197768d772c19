"""Accounts on PostgreSQL: what the store work of a request costs as finished jobs pile up, the index each of its
queries uses, and how long one owner's job waits behind another owner's burst.

Store growth: two databases in one throwaway PostgreSQL cluster (Debian's). The small one holds what the timed
operations touch: one owner's 120 finished predictions (a full page) and its key, and a claim fixture (owner
`burst-a` with one job running and 4 queued, owner `burst-b` with 2 queued). The large one holds the same plus
100,000 finished jobs (succeeded, failed or canceled, with outputs, logs and inputs like real ones) spread over 100
owners with a key each and over the last 23 hours (inside the default retention, so a retention pass keeps them
all: a steady state), bulk-inserted with SQLAlchemy core inserts, then VACUUM ANALYZE (what autovacuum does to a
table that grew). Each operation runs through `svd_gateway.store.Store` (as a gateway replica calls it)
`--repeat` times after a warm-up, alternating between the two stores so that load from elsewhere hits both
alike; the median is reported. The operations: the key lookup every request makes (`find_key`), a claim
(`claim_next`, the claimed job put back to queued between repetitions), an owner's list page (`page`, 101 rows
as GET /v1/predictions asks), a get (`find`), a /metrics scrape (`GatewayMetrics.render` over `watch(store)`),
retention as a replica runs it after a job (`expire(owner=...)`: that owner's outputs) and once a minute
(`expire`: every owner and age, with the default limits; a tenth as many repetitions), and a job's creation
by a key with `--max-active` (`create`: its quota
count; last, as each adds a queued job). The SQL each operation issues is captured with SQLAlchemy's
`before_cursor_execute` event and EXPLAINed, with its parameters, on the large store.

Fair share: the embedded tritonserver (streaming CPU variant, tiny model), one PostgreSQL database and two
`svd-triton gateway` processes (`--concurrency 1` each, one data folder); keys for owners A and B made with
`svd-triton gateway keys create`. In each of `--rounds` rounds A submits `--burst` predictions at once; once both
replicas run A's jobs, B submits one. Reported from the store (one clock): B's wait (started_at - created_at),
how many of A's jobs started in between, and A's last job's wait; and B's end-to-end time as its client saw it
(submit to `succeeded`, polling every 50 ms). Once A's last job has started, the rest of its burst is canceled.
Not a test: numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import base64
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy
from sqlalchemy import event, insert, select, update
from tests.support import TOKEN, start_server
from tests.support.gateways import GatewayProcess
from tests.support.postgres import throwaway_postgres
from tests.support.waiting import until

from benchmarks.report import ROOT, markdown_table, write_section
from svd_gateway.accounts import key_digest, new_key
from svd_gateway.blobs import FolderBlobs
from svd_gateway.jobs import MODEL, VERSION
from svd_gateway.metrics import GatewayMetrics
from svd_gateway.settings import Settings
from svd_gateway.store import ApiKey, Job, Store, new_id, utcnow

SAMPLE = ROOT / "src" / "svd_triton" / "data" / "sample.png"
LISTED = "owner-000"
"""The owner whose page and jobs are read (one of the 100 in the large store)."""
FAIR_PARAMS = {"num_frames": 4, "width": 64, "height": 64, "num_inference_steps": 8}
BATCH = 5000


def statements_of(store: Store, call: Callable[[], object]) -> list[tuple[str, object]]:
    """The SQL statements (with their parameters) that `call` makes `store` send."""
    sent: list[tuple[str, object]] = []

    def record(_connection, _cursor, statement, parameters, _context, _executemany):
        sent.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    return sent


# Store growth


class Fixture:
    """One store of the comparison, with what the timed operations touch."""

    def __init__(self, url: str, folder: Path, finished: int, owners: int, seed: int):
        self.store = Store(url, FolderBlobs(folder))
        self.random = random.Random(seed)
        self.now = utcnow()
        names = [f"owner-{index:03d}" for index in range(max(owners, 1))]
        self.key = new_key()
        with self.store.engine.begin() as connection:
            connection.execute(insert(ApiKey), [self.key_row(owner, self.key if owner == LISTED else new_key())
                                                for owner in names])
            page = [self.finished_row(LISTED, self.now - timedelta(hours=1, seconds=index), origin="predictions")
                    for index in range(120)]
            connection.execute(insert(Job), page)
            self.listed_ids = [row["id"] for row in page]
            for start in range(0, finished, BATCH):
                rows = [self.finished_row(names[index % owners], self.now - timedelta(hours=23) + timedelta(
                    seconds=index * 22 * 3600 / finished)) for index in range(start, min(finished, start + BATCH))]
                connection.execute(insert(Job), rows)
                self.listed_ids += [row["id"] for row in rows if row["owner"] == LISTED
                                    and row["origin"] == "predictions"]
            running = self.queued_row("burst-a", self.now - timedelta(minutes=5))
            running.update(status="running", worker="elsewhere", attempts=1, lease_holder="elsewhere",
                           started_at=self.now - timedelta(minutes=4), lease_expires_at=self.now + timedelta(days=1))
            waiting = [self.queued_row("burst-a", self.now - timedelta(minutes=3, seconds=i)) for i in range(4)]
            waiting += [self.queued_row("burst-b", self.now - timedelta(minutes=2, seconds=i)) for i in range(2)]
            connection.execute(insert(Job), [running, *waiting])
        with self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sqlalchemy.text("VACUUM ANALYZE"))
        self.digest = key_digest(self.key)
        self.image = SAMPLE.read_bytes()
        self.metrics = GatewayMetrics("bench")
        self.metrics.watch(self.store)

    def key_row(self, owner: str, key: str) -> dict:
        return {"name": f"key-{owner}", "digest": key_digest(key), "prefix": key[:12], "owner": owner,
                "scopes": ["generate"], "max_active": 1_000_000, "rate_per_minute": None, "bucket_tokens": None,
                "bucket_at": None, "created_at": self.now - timedelta(days=60), "expires_at": None,
                "revoked_at": None, "last_used_at": self.now}

    def common(self, owner: str, created: datetime, origin: str) -> dict:
        seed = self.random.getrandbits(63)
        return {"id": new_id(), "origin": origin, "model": MODEL, "version": VERSION, "keep_input": False,
                "mode": "image", "input": {"image": "sha256:" + "ab" * 32, "num_frames": 14, "seed": seed},
                "params": {"num_frames": 14, "width": 1024, "height": 576, "num_inference_steps": 25,
                           "motion_bucket_id": 127, "fps": 6, "seed": seed, "video_format": "mp4"},
                "image_sha256": "ab" * 32, "base_url": "https://svd.example.com", "logs": "", "progress": None,
                "output_key": None, "output_format": None, "output_bytes": None, "output_removed": False,
                "seed": seed, "error": None, "error_code": None, "error_field": None, "polled": True,
                "owner": owner, "api_key": f"key-{owner}", "webhook": None, "webhook_events": [], "worker": None,
                "attempts": 0, "lease_holder": None, "lease_expires_at": None, "cancel_requested": False,
                "created_at": created, "started_at": None, "completed_at": None, "predict_time": None}

    def finished_row(self, owner: str, created: datetime, origin: str | None = None) -> dict:
        origin = origin or self.random.choices(("predictions", "tir", "videos"), (85, 10, 5))[0]
        row = self.common(owner, created, origin)
        status = self.random.choices(("succeeded", "failed", "canceled"), (90, 7, 3))[0]
        started = created + timedelta(seconds=self.random.uniform(0.05, 5))
        ran = self.random.uniform(20, 90) if status == "succeeded" else self.random.uniform(1, 20)
        steps = 25 if status == "succeeded" else self.random.randint(1, 24)
        row.update(status=status, worker=f"replica-{self.random.randint(0, 2)}", attempts=1, started_at=started,
                   completed_at=started + timedelta(seconds=ran), predict_time=ran,
                   logs=f"Using seed: {row['seed']}\n" + "".join(
                       f"denoising {step}/25 [{ran * step / 25:.1f}s]\n" for step in range(1, steps + 1)),
                   progress={"phase": "denoising", "step": steps, "total": 25, "segment": 1, "segments": 1,
                             "elapsed": ran})
        if status == "succeeded":
            row.update(output_key=base64.urlsafe_b64encode(self.random.randbytes(24)).decode(),
                       output_format="mp4", output_bytes=self.random.randint(300_000, 3_000_000),
                       output_removed=self.random.random() < 0.2)
        elif status == "failed":
            row.update(error="the model server failed this request: out of memory", error_code="model_error")
        else:
            row.update(cancel_requested=True)
        return row

    def queued_row(self, owner: str, created: datetime) -> dict:
        return self.common(owner, created, "predictions") | {"status": "queued"}

    # The operations

    def key_lookup(self) -> object:
        return self.store.find_key(self.digest)

    def claim(self) -> Job | None:
        return self.store.claim_next("bench-holder", "bench", 15.0)

    def put_back(self, job: Job | None) -> None:
        """The claimed job queued again as it was, so that every claim sees the same queue."""
        assert job is not None, "the fixture's queue is never empty"
        with self.store.engine.begin() as connection:
            connection.execute(update(Job).where(Job.id == job.id).values(
                status="queued", worker=None, started_at=None, attempts=Job.attempts - 1, lease_holder=None,
                lease_expires_at=None))

    def page(self) -> list[Job]:
        return self.store.page("predictions", LISTED, None, 101)

    def get(self) -> Job | None:
        return self.store.find(self.random.choice(self.listed_ids), LISTED)

    def scrape(self) -> bytes:
        return self.metrics.render()

    def expire(self, owner: str | None = None) -> int:
        defaults = Settings()
        return self.store.expire(max_outputs=defaults.max_outputs, output_seconds=defaults.output_seconds,
                                 max_output_bytes=defaults.max_output_bytes, owner=owner)

    def expire_owner(self) -> int:
        return self.expire(LISTED)

    def create(self) -> Job:
        return self.store.create(Job(**self.queued_row(LISTED, utcnow())), self.image)


OPERATIONS: list[tuple[str, str, str | None]] = [
    ("key lookup (`find_key`, every request)", "key_lookup", None),
    ("claim (`claim_next`, 2 owners waiting)", "claim", "put_back"),
    ("owner's list page (`page`, 101 rows)", "page", None),
    ("get (`find(id, owner)`)", "get", None),
    ("/metrics scrape (`GatewayMetrics.render`)", "scrape", None),
    ("retention after a job (`expire(owner=...)`, its owner's outputs)", "expire_owner", None),
    ("retention pass (`expire`, all owners and ages; once a minute)", "expire", None),
    ("create, key with `--max-active` (`create`)", "create", None),
]
SLOW = {"expire": 10}
"""Operations timed `--repeat` / N times: each call reads every kept output."""


def timings(stores: list[Fixture], method: str, after: str | None, repeat: int) -> list[list[float]]:
    """Seconds per call on each store, the stores taken in turn."""
    seconds: list[list[float]] = [[] for _ in stores]
    for round_ in range(repeat + 10):
        for index, fixture in enumerate(stores):
            started = time.perf_counter()
            result = getattr(fixture, method)()
            elapsed = time.perf_counter() - started
            if after:
                getattr(fixture, after)(result)
            if round_ >= 10:  # the first ten warm connections, caches and code paths
                seconds[index].append(elapsed)
    return seconds


SCAN = re.compile(r"(Index Only Scan|Index Scan|Bitmap Index Scan|Seq Scan)(?: Backward)?(?: using| on) (\w+)")


def explain(fixture: Fixture, method: str, after: str | None) -> list[tuple[str, list[str], str]]:
    """(the statement, its scans as `kind using index`, the plan) for each table statement `method` sends. A plan
    with a sequential scan is EXPLAINed again with enable_seqscan off, to name the index it would use."""
    result: list[object] = []
    sent = statements_of(fixture.store, lambda: result.append(getattr(fixture, method)()))
    if after:
        getattr(fixture, after)(result[0])
    assert not method.startswith("expire") or result == [0], "retention dropped outputs: the fixture is not steady"
    found = []
    with fixture.store.engine.connect() as connection:
        for statement, parameters in sent:
            if not re.search(r"\b(FROM|UPDATE|INTO)\b", statement):
                continue  # BEGIN, pg_notify: no table
            plan = "\n".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + statement, parameters))
            scans = [f"{kind} {'on' if kind == 'Seq Scan' else 'using'} {name}" for kind, name in SCAN.findall(plan)]
            if any(scan.startswith("Seq Scan") for scan in scans):
                connection.exec_driver_sql("SET enable_seqscan = off")
                forced = "\n".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + statement, parameters))
                connection.exec_driver_sql("RESET enable_seqscan")
                plan += "\n-- with enable_seqscan off:\n" + forced
                scans.append("index it has, with enable_seqscan off: " + ", ".join(
                    f"{kind} using {name}" for kind, name in SCAN.findall(forced) if kind != "Seq Scan"))
            found.append((statement, scans, plan))
        connection.rollback()
    return found


def summary(statement: str) -> str:
    """A statement shortened to what tells it apart: its verb, what it selects, its table and conditions."""
    casts = r"::(?:TIMESTAMP WITHOUT TIME ZONE|[A-Z]+)(\[\])?"  # the parameters' types
    text = re.sub(casts, "", " ".join(statement.split()))
    text = re.sub(r"%\(\w+\)s", "?", re.sub(r"\b(predictions|api_keys|files|anon_1)\.", "", text))
    verb = text.split(" ", 1)[0]
    if "(SELECT" in text:  # a subquery: the statement whole, less its aliases
        return re.sub(r" AS \w+", "", text)
    table = re.search(r"\b(?:FROM|UPDATE|INTO) (\w+)", text)
    parts = [verb, "INTO"] if verb == "INSERT" else [verb]
    if verb == "SELECT":
        selected = re.sub(r" AS \w+", "", text[len("SELECT "):text.index(" FROM ")])
        parts.append("the rows" if selected.count(",") > 3 else selected)
        parts.append("FROM")
    parts.append(table[1] if table else "?")
    for clause, ends in (("WHERE", "GROUP BY|ORDER BY|LIMIT|FOR UPDATE|RETURNING"), ("GROUP BY", "ORDER BY|LIMIT"),
                         ("ORDER BY", "LIMIT|FOR UPDATE"), ("FOR UPDATE", "$")):
        found = re.search(rf"\b{clause} (.*?)(?: (?:{ends})|$)", text)
        if found:
            parts.append(f"{clause} {found[1]}" if clause != "FOR UPDATE" else f"FOR UPDATE {found[1]}")
    return " ".join(parts)


def store_growth(server: str, folder: Path, finished: int, owners: int, repeat: int) -> tuple[str, str, list[str]]:
    databases = []
    with sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT").connect() as connection:
        for name in ("growth_small", "growth_large"):
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
            databases.append(server.rsplit("/", 1)[0] + "/" + name)
    started = time.perf_counter()
    small = Fixture(databases[0], folder / "small", 0, 1, seed=1)
    large = Fixture(databases[1], folder / "large", finished, owners, seed=2)
    print(f"stores filled ({finished} finished jobs) and analyzed in {time.perf_counter() - started:.1f} s",
          flush=True)
    plans = {method: explain(large, method, after) for _, method, after in OPERATIONS}
    rows, ratios, medians = [], [], {}
    for label, method, after in OPERATIONS:
        empty, full = (statistics.median(values)
                       for values in timings([small, large], method, after, max(3, repeat // SLOW.get(method, 1))))
        ratios.append((label, full / empty))
        medians[method] = full
        rows.append([label, f"{empty * 1000:.2f}", f"{full * 1000:.2f}", f"{full / empty:.2f}×"])
        print(rows[-1], flush=True)
    table = markdown_table(["operation", "empty store (ms)", f"{finished:,} finished jobs (ms)", "ratio"], rows)
    listing, full_plans = [], []
    for label, method, _ in OPERATIONS:
        lines = []
        for statement, scans, plan in plans[method]:
            full_plans.append(f"-- {label}\n{' '.join(statement.split())}\n{plan}\n")
            lines.append(f"`{summary(statement)}`: " + (", ".join(f"{scan}" for scan in scans) or "no scan"))
        listing.append(f"- {label}:\n" + "\n".join(f"  - {line}" for line in lines))
    print("\n".join(full_plans))
    over = [f"{label.split(' (')[0]} ({ratio:.2f}×)" for label, ratio in ratios if ratio > 2]
    seq: dict[str, list[str]] = {}
    for label, method, _ in OPERATIONS:
        for scanned in {scan.removeprefix("Seq Scan on ") for _, scans, _ in plans[method] for scan in scans
                        if scan.startswith("Seq Scan")}:
            seq.setdefault(scanned, []).append(label.split(" (")[0])
    with large.store.engine.connect() as connection:
        sizes = {name: connection.execute(sqlalchemy.text(
            "SELECT reltuples::bigint, relpages FROM pg_class WHERE relname = :name"), {"name": name}).one()
                 for name in seq}
    verdict = ("Every operation stayed within 2× of its empty-store time (the target)." if not over else
               "Not within 2× of the empty store (the target): " + "; ".join(over) + "; the others are.")
    if dict(ratios).get(next(label for label, method, _ in OPERATIONS if method == "expire"), 0) > 2:
        verdict += (" The retention pass ranks every kept output per owner (a window over all of them, sorted) and "
                    "looks for finished jobs past the cutoff, which no index serves (none on `completed_at`): its "
                    "cost grows with the jobs kept. It answers no request and runs once a minute per replica (after "
                    f"a job, only that owner's outputs are looked at, the row above): with {finished:,} jobs kept, "
                    f"one pass took {medians['expire'] / medians['claim']:.0f}× a claim.")
    if not seq:
        verdict += " No plan on the large store scans a table sequentially."
    else:
        verdict += " Sequential scans on the large store: " + "; ".join(
            f"`{name}` ({sizes[name][0]:,} rows in {sizes[name][1]:,} pages) by {', '.join(labels)}"
            for name, labels in seq.items()) + (
            " (the index each would use otherwise is named below, EXPLAINed again with enable_seqscan off; a "
            "table of a few pages is read whole rather than through its index).")
    small.store.close()
    large.store.close()
    return table, "\n".join(listing), [verdict]


# Fair share


def make_key(database: str, name: str, owner: str) -> str:
    made = subprocess.run([sys.executable, "-m", "svd_triton", "gateway", "keys", "create", name, "--owner", owner,
                           "--database-url", database], capture_output=True, text=True, check=True)
    return made.stdout.strip().splitlines()[-1]


TERMINAL = ("succeeded", "failed", "canceled")


def fair_share(server: str, folder: Path, burst: int, rounds: int) -> list[dict]:
    """`rounds` times: A's burst, B's one job once both replicas run A's, A's rest canceled once its last started."""
    with sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT").connect() as connection:
        connection.execute(sqlalchemy.text("CREATE DATABASE fair"))
    database = server.rsplit("/", 1)[0] + "/fair"
    engine = sqlalchemy.create_engine(database)

    def jobs(ids: list[str]) -> list[Job]:
        with engine.connect() as connection:
            found = connection.execute(select(*Job.__table__.columns).where(Job.id.in_(ids))
                                       .order_by(Job.created_at, Job.id)).all()
        return [Job(**row._mapping) for row in found]

    image = "data:image/png;base64," + base64.b64encode(SAMPLE.read_bytes()).decode()
    body = {"version": "any", "input": {"image": image, **FAIR_PARAMS}}
    results = []
    with ExitStack() as stack, start_server(stream=True) as triton:
        stack.callback(engine.dispose)
        replicas = []
        for name in ("r0", "r1"):
            replica = GatewayProcess("--triton-url", triton.grpc_url, "--token", TOKEN, "--data-dir",
                                     str(folder / "fair-data"), "--database-url", database, "--replica-id", name,
                                     "--concurrency", "1", log=folder / f"fair-{name}.log")
            stack.callback(replica.stop)
            replicas.append(replica.launch())
        for replica in replicas:
            replica.wait_ready()
        keys = {owner: make_key(database, f"key-{owner.lower()}", owner) for owner in ("A", "B")}
        clients = {owner: [stack.enter_context(httpx.Client(base_url=replica.url, timeout=60,
                                                            headers={"Authorization": f"Bearer {key}"}))
                           for replica in replicas] for owner, key in keys.items()}

        def submit(owner: str, index: int) -> str:
            reply = clients[owner][index % 2].post("/v1/predictions", json=body)
            assert reply.status_code == 201, reply.text
            return reply.json()["id"]

        for _ in range(rounds):
            burst_ids = [submit("A", index) for index in range(burst)]
            until(lambda: len({job.worker for job in jobs(burst_ids) if job.status == "running"}) == 2,  # noqa: B023
                  "both replicas running A's jobs", seconds=120, interval=0.02)
            started = time.perf_counter()
            b_id = submit("B", 1)
            until(lambda: clients["B"][1].get(f"/v1/predictions/{b_id}").json()["status"] in TERMINAL,  # noqa: B023
                  "B's job", seconds=300, interval=0.05)
            end_to_end = time.perf_counter() - started
            (b_job,) = jobs([b_id])
            assert b_job.status == "succeeded", b_job.error
            last = until(lambda: (found := jobs(burst_ids)[-1]).started_at is not None and found,  # noqa: B023
                         "A's last job to start", seconds=600, interval=0.05)
            canceled = 0
            for job in jobs(burst_ids):
                if job.status not in TERMINAL:
                    canceled += clients["A"][0].post(f"/v1/predictions/{job.id}/cancel").status_code == 200
            until(lambda: all(job.status in TERMINAL for job in jobs(burst_ids)),  # noqa: B023
                  "A's burst to end", seconds=120, interval=0.1)
            a_jobs = jobs(burst_ids)
            results.append(outcome(a_jobs, b_job, last, end_to_end, canceled))
    return results


def outcome(a_jobs: list[Job], b_job: Job, last: Job, end_to_end: float, canceled: int) -> dict:
    def started_between(first: datetime, then: datetime) -> int:
        return sum(1 for job in a_jobs if job.started_at and first < job.started_at < then)

    passing = [job for job in a_jobs if job.started_at and b_job.created_at < job.started_at < b_job.started_at]
    together = sum(1 for job in passing for other in passing if job.worker < other.worker
                   and abs((job.started_at - other.started_at).total_seconds()) < 0.05)
    ahead = sum(1 for job in a_jobs if job.created_at < b_job.created_at
                and (job.started_at is None or job.started_at > b_job.created_at))
    timeline = [(job.owner, job.id[:6], job.created_at.time(), job.started_at and job.started_at.time(),
                 job.completed_at and job.completed_at.time(), job.worker, job.status)
                for job in sorted([*a_jobs, b_job], key=lambda job: job.started_at or job.created_at)]
    return {"b_wait": (b_job.started_at - b_job.created_at).total_seconds(), "b_end_to_end": end_to_end,
            "b_run": (b_job.completed_at - b_job.started_at).total_seconds(),
            "b_passed": started_between(b_job.created_at, b_job.started_at), "ahead": ahead, "together": together,
            "last_wait": (last.started_at - last.created_at).total_seconds(),
            "last_passed": started_between(last.created_at, last.started_at),
            "succeeded": sum(job.status == "succeeded" for job in a_jobs), "canceled": canceled,
            "timeline": timeline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000, help="finished jobs in the large store")
    parser.add_argument("--owners", type=int, default=100, help="owners they are spread over")
    parser.add_argument("--repeat", type=int, default=200, help="timed repetitions of each operation per store")
    parser.add_argument("--burst", type=int, default=20, help="A's predictions submitted at once")
    parser.add_argument("--rounds", type=int, default=3, help="bursts of A's, each with one job of B's")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="accounts-bench-") as folder, throwaway_postgres() as server:
        table, indexes, verdict = store_growth(server, Path(folder), args.jobs, args.owners, args.repeat)
        load_growth = os.getloadavg()[0]
        rounds = fair_share(server, Path(folder), args.burst, args.rounds)
    load = os.getloadavg()[0]
    for number, fair in enumerate(rounds, 1):
        print(f"round {number}:")
        for line in fair.pop("timeline"):
            print(*line)
        print(fair, flush=True)
    wait_table = markdown_table(
        ["round", "A's jobs queued ahead of B's", "B waited (started_at − created_at), s", "B end to end (ran), s",
         "A's jobs started while B waited", f"A's last of {args.burst} waited, s", "A's jobs started while it waited"],
        [[number, fair["ahead"], f"{fair['b_wait']:.2f}", f"{fair['b_end_to_end']:.2f} ({fair['b_run']:.2f})",
          fair["b_passed"], f"{fair['last_wait']:.2f}", fair["last_passed"]] for number, fair in enumerate(rounds, 1)])
    passed = [fair["b_passed"] for fair in rounds]
    together = sum(fair["together"] for fair in rounds)
    fairness = ("In every round none of A's jobs started while B's waited: the next free slot went to B (the owner "
                "with fewest jobs running), where oldest-first would have run all of A's queued jobs before it."
                if not any(passed) else
                f"A's jobs started while B's waited: {', '.join(map(str, passed))} (by round). Claimed one at a "
                "time, at most one of A's can go first whenever both replicas' slots free together (A and B then "
                "both have no job running, and the tie goes to A's older job).")
    if together:
        fairness += (f" Here {together} times two of A's jobs started on the two replicas within 50 ms of each "
                     "other while B's waited: both replicas ranked the owners before the other's claim committed, "
                     "both saw A with no job running, and SKIP LOCKED gave each one of A's jobs (claim_next's owner "
                     "order is not serialized across replicas; jobs through one Triton finish in lockstep, so their "
                     "replicas claim together).")
    if any(passed):
        fairness += (" Even so, B's job started ahead of at least "
                     f"{min(fair['ahead'] - fair['b_passed'] for fair in rounds)} of A's jobs queued before it.")
    body = (f"{table}\n\nEach operation through `svd_gateway.store.Store`, median of {args.repeat} after a "
            "warm-up, the two stores in turn. The empty store holds only what the operations touch (one owner's "
            "120 finished predictions, a full page, and its key; a claim fixture: owner `burst-a` with 1 job "
            "running and 4 queued, `burst-b` with 2 queued); the other holds the same plus "
            f"{args.jobs:,} finished jobs (succeeded, failed, canceled, with logs and outputs) over {args.owners} "
            "owners with a key each and over the last 23 hours (inside the default 24-hour retention, which then "
            "drops nothing), bulk-inserted, then VACUUM ANALYZE. The claimed job is put back to queued between "
            f"claims; the retention pass ran {max(3, args.repeat // SLOW['expire'])} times per store; creates run "
            "last (each adds a queued job). " + " ".join(verdict) +
            f" Load average after this part: {load_growth:.1f} on {os.cpu_count()} cores."
            "\n\nWhat each operation's SQL does on the large store (plain EXPLAIN with the parameters the store "
            f"sent, captured with SQLAlchemy's `before_cursor_execute`):\n\n{indexes}\n\n{wait_table}\n\n"
            f"Fair share: tiny model, streaming CPU variant, {FAIR_PARAMS['num_frames']} frames "
            f"{FAIR_PARAMS['width']}×{FAIR_PARAMS['height']}, {FAIR_PARAMS['num_inference_steps']} steps; two "
            "gateway replicas with `--concurrency 1` on one PostgreSQL database, keys made with `svd-triton gateway "
            f"keys create`. In each of {args.rounds} rounds owner A submitted {args.burst} predictions at once; when "
            "both replicas were running A's jobs, owner B submitted one. Waits are from the store's timestamps (one "
            "clock); end to end is B's client, submit to `succeeded` polling every 50 ms. "
            f"{fairness} Once A's last job had started, each of its unfinished jobs was sent a cancel "
            f"({', '.join(str(fair['canceled']) for fair in rounds)} by round; one may finish first). "
            f"Load average at the end: {load:.1f} on {os.cpu_count()} cores"
            + (" — the machine was shared with other work, so absolute times are noisier than the ratios."
               if max(load, load_growth) > (os.cpu_count() or 1) else "."))
    print(body)
    if not args.no_write:
        write_section("accounts", "Accounts: key lookups, fair share and store growth (PostgreSQL)", body)


if __name__ == "__main__":
    main()
