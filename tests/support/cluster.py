"""Gateway replicas as processes sharing one real PostgreSQL database and one data folder, for the tests that
need several (the queue, accounts)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import replicate
import sqlalchemy

from tests.support import TOKEN
from tests.support.gateways import GatewayProcess
from svd_gateway.store import Job, new_id

LEASES = ("--lease-seconds", "2", "--heartbeat-seconds", "0.5", "--poll-seconds", "0.5")
"""Short leases, by configuration: a lost replica's jobs are taken over within seconds."""


def new_database(server: str) -> str:
    name = f"queue_{new_id()[:12]}"
    with sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT").connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    return server.rsplit("/", 1)[0] + "/" + name


def jobs_in(database: str) -> list[Job]:
    engine = sqlalchemy.create_engine(database)
    with engine.connect() as connection:
        jobs = [Job(**row._mapping) for row in connection.execute(sqlalchemy.select(*Job.__table__.columns))]
    engine.dispose()
    return jobs


class Cluster:
    """Gateway processes sharing one database and one data folder."""

    def __init__(self, triton, database: str, folder: Path, *extra: str):
        self.triton, self.database, self.folder, self.extra = triton, database, folder, extra
        self.data = folder / "shared"
        self.replicas: dict[str, GatewayProcess] = {}

    def add(self, name: str, *flags: str) -> GatewayProcess:
        self.replicas[name] = GatewayProcess(
            "--triton-url", self.triton.grpc_url, "--token", TOKEN, "--data-dir", str(self.data),
            "--database-url", self.database, "--replica-id", name, "--webhook-allow", "127.0.0.1/32", *LEASES,
            *self.extra, *flags, log=self.folder / f"{name}.log")
        return self.replicas[name]

    def client(self, name: str) -> replicate.Client:
        client = replicate.Client(api_token=TOKEN, base_url=self.replicas[name].url)
        client.poll_interval = 0.1
        return client

    def job(self, job_id: str) -> Job:
        return next(job for job in jobs_in(self.database) if job.id == job_id)

    def running_on(self, job_id: str) -> str | None:
        """The replica running the job, once it has streamed progress."""
        job = self.job(job_id)
        return job.worker if job.status == "running" and "denoising" in (job.logs or "") else None

    def outputs(self) -> set[str]:
        folder = self.data / "outputs"
        return {path.name for path in folder.iterdir()} if folder.exists() else set()

    def stop(self) -> None:
        for replica in self.replicas.values():  # all at once: each drains in parallel
            if replica.process and replica.process.poll() is None:
                replica.resume()
                replica.process.terminate()
        for replica in self.replicas.values():
            replica.stop()


@contextmanager
def cluster(triton, postgres_url, folder: Path, *extra: str):
    running = Cluster(triton, new_database(postgres_url), folder, *extra)
    try:
        yield running
    finally:
        running.stop()
