"""The durable store: jobs and uploaded files in a SQL database (SQLite in WAL mode by default, any
SQLAlchemy URL such as PostgreSQL for several replicas), their bytes in `Blobs` (a local folder, or an
S3-compatible bucket that replicas share).

The jobs table is also the replicas' shared work queue: a queued job (`queued`, no lease holder) is
claimed by one gateway process (oldest first; `FOR UPDATE SKIP LOCKED` on PostgreSQL), which holds a
lease on it and renews it; a job whose lease expired is queued again by any replica. Every write the
holder makes is conditional on (id, attempts, lease_holder), so a replica that lost its lease (it was
partitioned, or paused) cannot finish a job another replica has taken over.

Methods are blocking; async code calls them through `starlette.concurrency.run_in_threadpool`.
Bytes are stored before the row that refers to them is committed, so a crash can leave bytes without a
row but never a row without bytes; `sweep_orphans` removes the former.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import secrets
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    CursorResult,
    DateTime,
    Engine,
    Executable,
    Float,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    exists,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column, sessionmaker

from .accounts import QuotaExceeded
from .blobs import FOLDERS, Blobs

TERMINAL = ("succeeded", "failed", "canceled")
ACTIVE = ("queued", "running")
NOTIFY_CHANNEL = "svd_gateway_jobs"
"""PostgreSQL LISTEN/NOTIFY channel: a job was queued (or released), idle replicas claim it."""
MIGRATION_LOCK = zlib.crc32(b"svd_gateway.migrations")
"""PostgreSQL advisory lock key: one replica migrates, the others wait for it."""
CLAIM_LOCK = zlib.crc32(b"svd_gateway.claims")
"""PostgreSQL advisory lock key: replicas claim in turn, each seeing the claims before it (fair shares)."""
BASELINE = "0001"
"""The revision of the schema the gateway made before migrations existed (create_all)."""
DRIVER_EXTRAS = {"postgresql": "postgres"}
"""Which of this package's extras installs a database's driver."""


class MissingDriver(RuntimeError):
    """The database URL names a driver that is not installed; the message says which extra brings it."""


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def new_id() -> str:
    """Lower-case base32 like Replicate's ids; 130 random bits."""
    return base64.b32encode(secrets.token_bytes(20)).decode().lower().rstrip("=")[:26]


def open_engine(database_url: str) -> Engine:
    """An engine for `database_url` (SQLite: WAL, threads share it), or MissingDriver naming the extra."""
    url = make_url(database_url)
    sqlite = url.get_backend_name() == "sqlite"
    try:
        engine = create_engine(
            url, pool_pre_ping=True, connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {}
        )
    except ModuleNotFoundError as error:
        extra = DRIVER_EXTRAS.get(url.get_backend_name())
        hint = f"pip install 'svd-triton[{extra}]'" if extra else f"install the {error.name} package"
        raise MissingDriver(
            f"--database-url {url.drivername}://...: the driver module {error.name!r} is not installed ({hint})"
        ) from None
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def migrate(engine: Engine) -> str | None:
    """Upgrade the schema to the newest migration and return its revision. On PostgreSQL under an advisory
    lock held for the transaction: replicas starting together wait for the first, then find nothing to do.
    A database made before migrations existed (tables, no alembic_version) is stamped at the baseline."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(resources.files("svd_gateway") / "migrations"))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        tables = set(inspect(connection).get_table_names())
        if "predictions" in tables and "alembic_version" not in tables:
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")
        return MigrationContext.configure(connection).get_current_revision()


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    """A key a client or operator presents (accounts.py): its digest only, never the key."""

    __tablename__ = "api_keys"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    """The key's first characters, to tell keys apart in listings."""
    owner: Mapped[str] = mapped_column(String(64), index=True)
    scopes: Mapped[list] = mapped_column(JSON)
    max_active: Mapped[int | None] = mapped_column(Integer)
    """Its jobs queued or running at once at most; None: no cap."""
    rate_per_minute: Mapped[float | None] = mapped_column(Float)
    """Jobs it may create per minute (a token bucket holding a minute's worth); None: no limit."""
    bucket_tokens: Mapped[float | None] = mapped_column(Float)
    bucket_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    """When it last created a job."""


class Owner(Base):
    """An owner of jobs and files, with the secret its webhooks are signed with (Replicate's is per account)."""

    __tablename__ = "owners"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    webhook_secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime)


ACTIVE_RETRY_SECONDS = 5
"""Retry-After for a key at its cap on active jobs: a slot frees when one of them ends, which no one can tell."""


class Job(Base):
    """One generation: a Replicate prediction, or a request of the synchronous routes."""

    __tablename__ = "predictions"
    __table_args__ = (
        Index("ix_predictions_owner_page", "owner", "origin", "created_at", "id"),
        Index("ix_predictions_api_key_status", "api_key", "status"),
        Index("ix_predictions_status_owner", "status", "owner", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    origin: Mapped[str] = mapped_column(String(16))
    """predictions, videos (OpenAI's Videos API), stability (a client polls or is called back), or
    tir/forge/openai (a client waits on the line)."""
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    """queued, running, then succeeded, failed or canceled; each API family says these in its own words."""
    keep_input: Mapped[bool] = mapped_column(Boolean, default=False)
    """Its input image is kept as long as its video, for later jobs that start from it (OpenAI's remix and extend
    read it as `inputs/{id}`): the image is stored once."""
    mode: Mapped[str] = mapped_column(String(8), default="image")
    """image (image-to-video from the stored input) or text (text-to-video from the prompt in params)."""
    input: Mapped[dict] = mapped_column(JSON)
    """The input as given, with the image replaced by its digest."""
    params: Mapped[dict] = mapped_column(JSON)
    """The model's parameters."""
    image_sha256: Mapped[str] = mapped_column(String(64))
    base_url: Mapped[str] = mapped_column(String(500))
    logs: Mapped[str] = mapped_column(Text, default="")
    progress: Mapped[dict | None] = mapped_column(JSON)
    """The latest progress of a running or finished job, as svd_contract.Progress's fields; None before any."""
    output_key: Mapped[str | None] = mapped_column(String(64), index=True)
    output_format: Mapped[str | None] = mapped_column(String(16))
    output_bytes: Mapped[int | None] = mapped_column(BigInteger)
    output_removed: Mapped[bool] = mapped_column(Boolean, default=False)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_field: Mapped[str | None] = mapped_column(String(64))
    polled: Mapped[bool] = mapped_column(Boolean, default=True)
    """Its client polls (or is called back): it goes to the shared queue, and if its replica is lost it runs again
    elsewhere. Otherwise its client waits on the line to the replica that accepted it, which reserves and runs it
    itself; when that replica is lost, so is the client, and the job fails."""
    owner: Mapped[str | None] = mapped_column(String(64))
    """Whose job it is (accounts.py): only that owner's keys find it."""
    api_key: Mapped[str | None] = mapped_column(String(64))
    """The name of the key that created it: its cap on active jobs counts it; operators audit with it."""
    webhook: Mapped[str | None] = mapped_column(String(2000))
    webhook_events: Mapped[list] = mapped_column(JSON, default=list)
    worker: Mapped[str | None] = mapped_column(String(200))
    """The replica id that ran (or runs) it, for logs; correctness never reads it."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Claims so far; a release at shutdown gives its attempt back."""
    retry_at: Mapped[datetime | None] = mapped_column(DateTime)
    """A job queued again after a fault is not claimed before this (its backoff)."""
    failures: Mapped[list | None] = mapped_column(JSON)
    """Each failed attempt's error, oldest first: {"attempt", "error", "at"}."""
    alone: Mapped[bool] = mapped_column(Boolean, default=False)
    """An attempt of it died with the model's process: from then on it runs with no other job running on any
    replica, so if it is what kills the model it takes no batch neighbour along (claim_next and claim see to it)."""
    lease_holder: Mapped[str | None] = mapped_column(String(64), index=True)
    """The gateway process (random per start) holding the job: running it, or, for a synchronous route,
    holding it queued for the client on the line; None while it waits in the shared queue."""
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    predict_time: Mapped[float | None] = mapped_column(Float)


class Upload(Base):
    """A file uploaded with POST /v1/files (the replicate client uploads local file inputs this way)."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_owner", "owner", "created_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Deferred(Exception):
    """A reserved job cannot start yet: a job that runs alone is queued or running, or this one runs alone and
    others still run."""


class LeaseLost(Exception):
    """The job is no longer held by this process under this attempt: another replica took it over (or it was
    canceled while queued)."""


class Store:
    def __init__(self, database_url: str, blobs: Blobs, *, upgrade: bool = True):
        self.blobs = blobs
        self.engine = open_engine(database_url)
        if upgrade:
            migrate(self.engine)
        self.postgresql = self.engine.dialect.name == "postgresql"
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self.claiming = threading.Lock()
        """Claims in this process take turns (PostgreSQL's CLAIM_LOCK does it across processes): each sees the one
        before it, which the fair share and jobs that run alone need."""

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """A round trip to the database (SQLAlchemyError when it does not answer)."""
        with self.session() as session:
            session.execute(text("SELECT 1"))

    # Jobs

    def create(self, job: Job, image: bytes) -> Job:
        """Store a job: queued for any replica, or (lease_holder set) reserved for its holder. Its key's quotas
        are checked in the same transaction, under a lock on the key's row, so replicas creating jobs for one key
        at once cannot pass its caps together (QuotaExceeded)."""
        self.blobs.write(f"inputs/{job.id}", image)
        try:
            with self.session.begin() as session:
                if job.api_key is not None:
                    self._admit(session, job.api_key)
                session.add(job)
                if job.lease_holder is None:
                    self._notify(session)
        except QuotaExceeded:
            self.blobs.delete(f"inputs/{job.id}")
            raise
        return job

    def _admit(self, session: Session, key_name: str) -> None:
        """Take one of the key's creations, or raise QuotaExceeded. The first statement writes the key's row:
        it is locked (PostgreSQL) or the database's write lock is held (SQLite) until the job is committed."""
        now = utcnow()
        if not _rows(session, update(ApiKey).where(ApiKey.name == key_name).values(last_used_at=now)):
            return  # the bootstrap key: no row, no quotas
        key = session.get(ApiKey, key_name, populate_existing=True)
        assert key is not None, "the row this transaction just updated"
        if key.max_active is not None:
            active = session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.api_key == key_name, Job.status.in_(("queued", "running")))
            )
            if (active or 0) >= key.max_active:
                raise QuotaExceeded(
                    f"key {key_name} has {active} jobs queued or running, its limit (max_active {key.max_active}); "
                    "send more when one ends",
                    ACTIVE_RETRY_SECONDS,
                )
        if key.rate_per_minute is not None:
            per_second = key.rate_per_minute / 60
            last = key.bucket_at or now
            tokens = min(
                key.rate_per_minute,
                (key.rate_per_minute if key.bucket_tokens is None else key.bucket_tokens)
                + (now - last).total_seconds() * per_second,
            )
            if tokens < 1:
                raise QuotaExceeded(
                    f"key {key_name} may create {key.rate_per_minute:g} jobs per minute; it has used them",
                    max(1, math.ceil((1 - tokens) / per_second)),
                )
            key.bucket_tokens, key.bucket_at = tokens - 1, now

    def get(self, job_id: str) -> Job | None:
        """Any owner's job: for the runner; routes ask `find` with the caller's owner."""
        with self.session() as session:
            return session.get(Job, job_id)

    def find(self, job_id: str, owner: str) -> Job | None:
        """`owner`'s job by id; another owner's is None, as one that does not exist."""
        job = self.get(job_id)
        return job if job is not None and job.owner == owner else None

    def page(
        self, origin: str, owner: str, cursor: tuple[datetime, str] | None, limit: int, newest_first: bool = True
    ) -> list[Job]:
        """`limit` of `owner`'s jobs of `origin` after `cursor` (created_at, id): newest first, or oldest first."""
        if newest_first:
            query = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
            if cursor:
                query = query.where(
                    or_(Job.created_at < cursor[0], (Job.created_at == cursor[0]) & (Job.id < cursor[1]))
                )
        else:
            query = select(Job).order_by(Job.created_at, Job.id)
            if cursor:
                query = query.where(
                    or_(Job.created_at > cursor[0], (Job.created_at == cursor[0]) & (Job.id > cursor[1]))
                )
        with self.session() as session:
            return list(session.scalars(query.where(Job.owner == owner, Job.origin == origin).limit(limit)))

    def claim_next(self, holder: str, worker: str, lease: float) -> Job | None:
        """A queued job, now `running` under a lease for `holder`; None when the queue is empty. Fair across
        owners: the owner with the fewest jobs running (all replicas) goes first, ties to the oldest waiting job,
        and within an owner oldest first; so one owner's burst puts another's job behind at most one of its
        running jobs per replica. On PostgreSQL claims take turns (an advisory lock held for the transaction: a
        few milliseconds each), so two replicas freed at once do not both pick from the owner that had nothing
        running a moment before; SKIP LOCKED still passes rows another transaction holds. The conditional update
        makes a lost race (SQLite, several processes) a retry, never a double claim. A job that runs alone
        (`alone`) holds the queue from its requeue on, goes before all others once nothing is running, and while it
        runs nothing is claimed."""
        while True:
            with self._claim_turn() as session:
                waiting = select(Job.id).where(*_claimable(utcnow()))
                alone = _alone_ahead(session)
                if alone is not None:  # it goes next, or nothing does
                    due = alone.retry_at is None or alone.retry_at <= utcnow()
                    if alone.lease_holder is not None or not due:  # running, reserved by a replica, or backing off
                        return None
                    return self._take(session, alone.id, None, holder, worker, lease)  # None while anything runs
                job_id = None
                for owner in self._owners_in_turn(session):
                    job_id = session.scalar(
                        waiting.where(Job.owner == owner)
                        .order_by(Job.created_at, Job.id)
                        .limit(1)
                        .with_for_update(skip_locked=True)
                    )
                    if job_id is not None:
                        break
                if job_id is None:
                    return None
                job = self._take(session, job_id, None, holder, worker, lease)
                if job is not None:
                    return job

    @staticmethod
    def _owners_in_turn(session: Session) -> list[str | None]:
        """Owners with waiting jobs, in claim order: fewest running first, then the oldest waiting job."""
        running = dict(
            session.execute(select(Job.owner, func.count()).where(Job.status == "running").group_by(Job.owner)).all()
        )
        waiting = session.execute(
            select(Job.owner, func.min(Job.created_at)).where(*_claimable(utcnow())).group_by(Job.owner)
        ).all()
        return [owner for owner, _ in sorted(waiting, key=lambda row: (running.get(row[0], 0), row[1]))]

    def queue_position(self, job: Job) -> int:
        """About how many queued jobs are ahead of `job` in claim_next's order (fal's queue_position, asked at
        every poll): its owner's older ones, and from each other owner as many as take turns before it."""
        ahead = or_(Job.created_at < job.created_at, (Job.created_at == job.created_at) & (Job.id < job.id))
        queued = (Job.status == "queued", Job.lease_holder.is_(None))
        with self.session() as session:
            mine = session.scalar(select(func.count()).select_from(Job).where(*queued, Job.owner == job.owner, ahead))
            others = session.execute(
                select(func.count(), func.min(Job.created_at))
                .where(*queued, Job.owner != job.owner)
                .group_by(Job.owner)
            ).all()
        assert mine is not None, "COUNT answers one row"
        return mine + sum(min(count, mine + (oldest < job.created_at)) for count, oldest in others)

    def claim(self, job_id: str, holder: str, worker: str, lease: float) -> Job | None:
        """The job `holder` reserved (a synchronous route's), now `running`; None if it was canceled. Deferred
        while a job that runs alone is queued or running and is not this one, or is this one and others run."""
        with self._claim_turn() as session:
            claimed = self._take(session, job_id, holder, holder, worker, lease)
            if claimed is None and session.scalar(
                select(func.count()).where(Job.id == job_id, Job.status == "queued", Job.lease_holder == holder)
            ):
                raise Deferred(job_id)  # still queued and this holder's: not canceled, a job that runs alone holds it
            return claimed

    @contextlib.contextmanager
    def _claim_turn(self) -> Iterator[Session]:
        """The transaction of one claim, taking its turn: this process's lock, and PostgreSQL's across replicas."""
        with self.claiming, self.session.begin() as session:
            if self.postgresql:
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})
            yield session

    def _take(
        self, session: Session, job_id: str, reserved_by: str | None, holder: str, worker: str, lease: float
    ) -> Job | None:
        now = utcnow()
        claimed = _rows(
            session,
            update(Job)
            .where(Job.id == job_id, Job.status == "queued", _held_by(reserved_by), _alone_allows(job_id))
            .values(
                status="running",
                worker=worker,
                started_at=now,
                attempts=Job.attempts + 1,
                lease_holder=holder,
                lease_expires_at=now + timedelta(seconds=lease),
            ),
        )
        return session.get(Job, job_id, populate_existing=True) if claimed else None

    def renew(self, holder: str, lease: float, ids: Iterable[str]) -> dict[str, bool]:
        """Extend the leases `holder` has on the jobs `ids` (those its process still tracks: a row it lost track
        of, after an error, expires and is taken over rather than held forever); returns its jobs (id → cancel
        requested): a running job missing here was taken over by another replica."""
        with self.session.begin() as session:
            session.execute(
                update(Job)
                .where(Job.lease_holder == holder, Job.status.not_in(TERMINAL), Job.id.in_(list(ids)))
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease))
            )
            return dict(
                session.execute(
                    select(Job.id, Job.cancel_requested).where(Job.lease_holder == holder, Job.status.not_in(TERMINAL))
                ).all()
            )

    def reclaim_expired(self, max_attempts: int) -> tuple[int, list[Job]]:
        """Jobs whose holder stopped renewing: a polled one is queued again (or failed after `max_attempts`
        starts, or canceled if that was asked for); a synchronous route's fails, its client is gone with the
        replica. Returns (how many were taken over, the jobs this ended)."""
        taken, ended = 0, []
        with self.session.begin() as session:
            expired = list(
                session.scalars(
                    select(Job)
                    .where(Job.status.not_in(TERMINAL), Job.lease_holder.is_not(None), Job.lease_expires_at < utcnow())
                    .order_by(Job.created_at)
                    .with_for_update(skip_locked=True)
                )
            )
            for job in expired:
                values, note = _after_expiry(job, max_attempts)
                done = _rows(
                    session,
                    update(Job)
                    .where(Job.id == job.id, Job.attempts == job.attempts, Job.lease_holder == job.lease_holder)
                    .values(
                        lease_holder=None, lease_expires_at=None, logs=func.coalesce(Job.logs, "") + note, **values
                    ),
                )
                taken += done
                if done and values["status"] in TERMINAL:
                    ended.append(job.id)
            if taken:
                self._notify(session)
        ended_jobs: list[Job] = []
        for job_id in ended:
            ended_job = self.get(job_id)
            assert ended_job is not None, "a job this call ended was deleted before it was read back"
            ended_jobs.append(ended_job)
        for ended_job in ended_jobs:
            self.blobs.delete(f"inputs/{ended_job.id}")
        return taken, ended_jobs

    def append_logs(self, job: Job, lines: str, progress: dict | None = None) -> Job:
        """Add log lines (and the latest progress) as the job's holder (LeaseLost if it no longer is); the job
        returned tells whether a cancel was asked for (possibly through another replica)."""
        values = {"logs": func.coalesce(Job.logs, "") + lines, **({"progress": progress} if progress else {})}
        with self.session.begin() as session:
            if not _rows(session, update(Job).where(*_fence(job)).values(**values)):
                raise LeaseLost(job.id)
            updated = session.get(Job, job.id, populate_existing=True)
            assert updated is not None, "the row this transaction just updated"
            return updated

    def finish(self, job: Job, status: str, **values) -> Job | None:
        """Set a terminal status as the job's holder; None when it is not (canceled meanwhile, or taken over)."""
        with self.session.begin() as session:
            done = _rows(
                session,
                update(Job)
                .where(*_fence(job))
                .values(status=status, completed_at=utcnow(), lease_holder=None, lease_expires_at=None, **values),
            )
            finished = session.get(Job, job.id, populate_existing=True)
            if done and job.alone:  # it held the queue: the replicas waiting for it claim at once
                self._notify(session)
        if not done:
            return None
        if not (job.keep_input and status == "succeeded"):  # else kept as long as the video
            self.blobs.delete(f"inputs/{job.id}")
        return finished

    def requeue(
        self, job: Job, note: str, error: str, delay: float, counted: bool = True, alone: bool = False
    ) -> Job | None:
        """Queue again, not before `delay` seconds, a job whose attempt this process held failed for a fault that
        was not the request's own; its error is kept, and the attempt counts unless the request never reached the
        model (`counted`); `alone`: it runs with no other job running. A polled job goes to the shared queue; a
        synchronous one stays reserved for this process (its client is on this line). None: no longer this
        holder's (canceled meanwhile, or taken over)."""
        failure = {
            "attempt": job.attempts,
            "error": error,
            "at": utcnow().isoformat(timespec="seconds") + "Z",
            **({} if counted else {"counted": False}),
        }
        values: dict[str, Any] = {
            **({} if counted else {"attempts": Job.attempts - 1}),
            "status": "queued",
            "retry_at": utcnow() + timedelta(seconds=delay),
            "failures": [*(job.failures or []), failure],
            "alone": alone,
            "progress": None,
            "logs": func.coalesce(Job.logs, "") + note + "\n",
        }
        if job.polled:
            values.update(lease_holder=None, lease_expires_at=None)
        with self.session.begin() as session:
            if not _rows(session, update(Job).where(*_fence(job)).values(**values)):
                return None
            return session.get(Job, job.id, populate_existing=True)

    def note_waiting(self, line: str) -> None:
        """End every queued job's logs with `line` (why it waits), unless they end with it already: replicas that
        each see the same outage write it once."""
        with self.session.begin() as session:
            session.execute(
                update(Job)
                .where(Job.status == "queued", ~func.coalesce(Job.logs, "").endswith(line, autoescape=True))
                .values(logs=func.coalesce(Job.logs, "") + line)
            )

    def release(self, job: Job, note: str) -> bool:
        """Give a job this process holds back to the queue, attempt not counted (a replica shutting down);
        idle replicas are woken for it."""
        with self.session.begin() as session:
            released = _rows(
                session,
                update(Job)
                .where(*_fence(job))
                .values(
                    status="queued",
                    lease_holder=None,
                    lease_expires_at=None,
                    attempts=Job.attempts - 1,
                    logs=func.coalesce(Job.logs, "") + note + "\n",
                ),
            )
            if released:
                self._notify(session)
        return bool(released)

    def delete(self, job_id: str) -> bool:
        """Remove a finished job and its video; False when there is no such job or it is not finished."""
        with self.session.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or job.status not in TERMINAL:
                return False
            session.delete(job)
        if job.output_key and not job.output_removed:
            self.delete_output(job.output_key)
        self.blobs.delete(f"inputs/{job.id}")
        return True

    def request_cancel(self, job_id: str) -> Job | None:
        """A queued job is canceled at once; a running one is flagged for its holder, which sees the flag at its
        next progress write or heartbeat, wherever it runs."""
        with self.session.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or job.status in TERMINAL:
                return job
            if job.status == "queued":
                job.status, job.completed_at, job.lease_holder, job.lease_expires_at = "canceled", utcnow(), None, None
            job.cancel_requested = True
        if job.status == "canceled":
            self.blobs.delete(f"inputs/{job_id}")
        return job

    def counts(self) -> tuple[dict[str, int], float | None]:
        """(queued and running jobs, age in seconds of the oldest queued job or None): what /metrics reports. Only
        unfinished jobs are counted: over the status index, a scrape costs the same however many are kept."""
        with self.session() as session:
            by_status = dict(
                session.execute(
                    select(Job.status, func.count()).where(Job.status.in_(ACTIVE)).group_by(Job.status)
                ).all()
            )
            oldest = session.scalar(select(func.min(Job.created_at)).where(Job.status == "queued"))
        return by_status, (utcnow() - oldest).total_seconds() if oldest else None

    @property
    def can_listen(self) -> bool:
        """Whether `listen` works here: PostgreSQL through psycopg (3)."""
        return self.postgresql and self.engine.driver == "psycopg"

    def listen(self, on_notify: Callable[[], object], stopped: threading.Event) -> None:
        """Blocking (a thread's target): call `on_notify` for every NOTIFY of a queued job until `stopped` is set;
        reconnects after a lost connection, and calls it once per (re)connection for what it may have missed."""
        import psycopg

        dsn = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not stopped.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as connection:
                    connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    on_notify()
                    while not stopped.is_set():
                        for _ in connection.notifies(timeout=1.0):
                            on_notify()
            except psycopg.Error:
                stopped.wait(1.0)

    def _notify(self, session: Session) -> None:
        """Wake idle replicas (PostgreSQL LISTEN/NOTIFY, delivered at commit); the others poll."""
        if self.postgresql:
            session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})

    # Bytes

    def read_input(self, job_id: str) -> bytes:
        return self.blobs.read(f"inputs/{job_id}")

    def save_output(self, video: bytes) -> str:
        key = secrets.token_urlsafe(24)
        self.blobs.write(f"outputs/{key}", video)
        return key

    def read_output(self, key: str | None) -> bytes:
        """The video stored under `key`; FileNotFoundError when there is none (None: a job without a video)."""
        if key is None:
            raise FileNotFoundError("outputs/None")
        return self.blobs.read(f"outputs/{key}")

    def delete_output(self, key: str) -> None:
        self.blobs.delete(f"outputs/{key}")

    def job_with_output(self, origin: str, owner: str, video: bytes) -> Job | None:
        """`owner`'s finished job of `origin` whose stored video is exactly these bytes (a client sending back a
        video it downloaded), or None."""
        with self.session() as session:
            candidates = list(
                session.scalars(
                    select(Job).where(
                        Job.origin == origin,
                        Job.owner == owner,
                        Job.output_bytes == len(video),
                        Job.output_removed.is_(False),
                    )
                )
            )
        return next(
            (job for job in candidates if job.output_key is not None and self.read_output(job.output_key) == video),
            None,
        )

    # Uploads

    def add_upload(
        self,
        owner: str,
        name: str,
        content_type: str,
        source: str | Path | bytes,
        sha256: str,
        size: int,
        seconds: float,
    ) -> Upload:
        """`owner`'s file, kept `seconds`: `source` is a complete file (moved in) or the bytes themselves."""
        upload = Upload(
            id=new_id(),
            owner=owner,
            name=name[:255],
            content_type=content_type[:255],
            size=size,
            sha256=sha256,
            created_at=utcnow(),
            expires_at=utcnow() + timedelta(seconds=seconds),
        )
        if isinstance(source, bytes):
            self.blobs.write(f"files/{upload.id}", source)
        else:
            self.blobs.move_in(f"files/{upload.id}", source)
        with self.session.begin() as session:
            session.add(upload)
        return upload

    def read_upload(self, upload_id: str) -> bytes:
        return self.blobs.read(f"files/{upload_id}")

    def get_upload(self, upload_id: str, owner: str) -> Upload | None:
        """`owner`'s file, until it expires; another owner's is None, as one that does not exist."""
        with self.session() as session:
            upload = session.get(Upload, upload_id)
        return upload if upload and upload.owner == owner and upload.expires_at > utcnow() else None

    def list_uploads(self, owner: str) -> list[Upload]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(Upload)
                    .where(Upload.owner == owner, Upload.expires_at > utcnow())
                    .order_by(Upload.created_at.desc())
                )
            )

    def delete_upload(self, upload_id: str, owner: str) -> bool:
        with self.session.begin() as session:
            upload = session.get(Upload, upload_id)
            if upload is None or upload.owner != owner:
                return False
            session.delete(upload)
        self.blobs.delete(f"files/{upload_id}")
        return True

    # Keys and owners

    def add_key(self, key: ApiKey) -> None:
        """Store a new key (its name unique: revoked keys keep theirs, for the audit trail); ValueError if taken."""
        try:
            with self.session.begin() as session:
                session.add(key)
        except IntegrityError:
            raise ValueError(f"a key named {key.name!r} exists already (revoked keys keep their names)") from None

    def find_key(self, digest: str) -> ApiKey | None:
        """The live key with this digest: not revoked, not expired."""
        now = utcnow()
        with self.session() as session:
            return session.scalars(
                select(ApiKey).where(
                    ApiKey.digest == digest,
                    ApiKey.revoked_at.is_(None),
                    or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
                )
            ).first()

    def has_keys(self) -> bool:
        """Whether any key was ever made (then every request needs one)."""
        with self.session() as session:
            return session.scalar(select(ApiKey.name).limit(1)) is not None

    def list_keys(self) -> list[tuple[ApiKey, int]]:
        """Every key, revoked ones too, with how many of its jobs are queued or running."""
        with self.session() as session:
            active = dict(
                session.execute(
                    select(Job.api_key, func.count()).where(Job.status.in_(ACTIVE)).group_by(Job.api_key)
                ).all()
            )
            return [(key, active.get(key.name, 0)) for key in session.scalars(select(ApiKey).order_by(ApiKey.name))]

    def revoke_key(self, name: str) -> bool:
        """Revoke a live key; False when there is none by that name (or it was revoked already)."""
        with self.session.begin() as session:
            return bool(
                _rows(
                    session,
                    update(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow()),
                )
            )

    def webhook_secret(self, owner: str, make: Callable[[], str]) -> str:
        """The secret `owner`'s webhooks are signed with, made with `make` at its first need (once, whichever
        replica asks first)."""
        with self.session() as session:
            found = session.get(Owner, owner)
        if found is not None:
            return found.webhook_secret
        try:
            with self.session.begin() as session:
                session.add(Owner(name=owner, webhook_secret=make(), created_at=utcnow()))
        except IntegrityError:  # another replica made it first
            pass
        with self.session() as session:
            made = session.get(Owner, owner)
        assert made is not None, "inserted above, by this process or another"
        return made.webhook_secret

    # Retention

    def expire(
        self, *, max_outputs: int, output_seconds: float, max_output_bytes: int, owner: str | None = None
    ) -> int:
        """Drop outputs past their age, and each owner's beyond its newest `max_outputs` or `max_output_bytes` in
        total (so one owner's many jobs never evict another's videos); delete finished jobs and uploads past their
        age. With `owner`, only that owner's outputs beyond its limits, which is all a job just finished can change
        (over the owner's index, not the whole table). Returns how many outputs were dropped."""
        cutoff = utcnow() - timedelta(seconds=output_seconds)
        dropped: list[str] = []
        dropped_inputs: list[str] = []
        newest = (Job.completed_at.desc(), Job.id.desc())
        ranked = (
            select(
                Job.id,
                Job.completed_at,
                func.row_number().over(partition_by=Job.owner, order_by=newest).label("rank"),
                func.sum(Job.output_bytes).over(partition_by=Job.owner, order_by=newest).label("total"),
            )
            .where(Job.output_key.is_not(None), Job.output_removed.is_(False), *([Job.owner == owner] if owner else []))
            .subquery()
        )
        with self.session.begin() as session:
            doomed = list(
                session.scalars(
                    select(ranked.c.id).where(
                        or_(
                            ranked.c.completed_at < cutoff,
                            ranked.c.rank > max_outputs,
                            ranked.c.total > max_output_bytes,
                        )
                    )
                )
            )
            for start in range(0, len(doomed), 500):
                for job in session.scalars(select(Job).where(Job.id.in_(doomed[start : start + 500]))):
                    assert job.output_key is not None, "ranked among the jobs with an output"
                    job.output_removed = True
                    dropped.append(job.output_key)
                    dropped_inputs += [job.id] if job.keep_input else []
            past_age = select(Job).where(Job.status.in_(TERMINAL), Job.completed_at < cutoff)
            for job in session.scalars(past_age) if owner is None else ():
                if job.output_key and not job.output_removed:
                    dropped.append(job.output_key)
                dropped_inputs += [job.id] if job.keep_input else []
                session.delete(job)
            expired_uploads = (
                list(session.scalars(select(Upload.id).where(Upload.expires_at <= utcnow()))) if owner is None else []
            )
            for upload_id in expired_uploads:
                session.delete(session.get(Upload, upload_id))
        for key in dropped:
            self.delete_output(key)
        for job_id in dropped_inputs:
            self.blobs.delete(f"inputs/{job_id}")
        for upload_id in expired_uploads:
            self.blobs.delete(f"files/{upload_id}")
        return len(dropped)

    def sweep_orphans(self, older_than: float = 0.0) -> list[str]:
        """Delete stored bytes that no row refers to (left by a crash between a write and its commit).
        Replicas sharing a bucket pass `older_than`, so as not to take another's bytes before its commit."""
        listed_before = utcnow() - timedelta(seconds=older_than)
        names = [
            name for folder in FOLDERS for name, modified in self.blobs.listing(folder) if modified <= listed_before
        ]
        with self.session() as session:
            keep = {
                f"outputs/{key}"
                for key in session.scalars(
                    select(Job.output_key).where(Job.output_key.is_not(None), Job.output_removed.is_(False))
                )
            }
            keep |= {
                f"inputs/{job_id}"
                for job_id in session.scalars(
                    select(Job.id).where(
                        or_(
                            Job.status.not_in(TERMINAL),
                            Job.keep_input.is_(True) & (Job.status == "succeeded") & Job.output_removed.is_(False),
                        )
                    )
                )
            }
            keep |= {f"files/{upload_id}" for upload_id in session.scalars(select(Upload.id))}
        removed = [name for name in names if name not in keep]
        for name in removed:
            self.blobs.delete(name)
        return removed


def _rows(session: Session, statement: Executable) -> int:
    """The rows an UPDATE matched. Session.execute is annotated as returning a Result, which has no rowcount; for
    a DML statement it is a CursorResult, which does."""
    return cast("CursorResult[Any]", session.execute(statement)).rowcount


def _claimable(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """Queued for any replica, and past its backoff if it is a retry."""
    return (
        Job.status == "queued",
        Job.lease_holder.is_(None),
        or_(Job.retry_at.is_(None), Job.retry_at <= now),
    )


def _alone_ahead(session: Session) -> Job | None:
    """The job that runs alone and holds the queue: the one running if any, else the oldest queued (for any
    replica or reserved by one), its backoff included. None: claims go on as usual."""
    return session.scalars(
        select(Job)
        .where(Job.alone, Job.status.in_(ACTIVE))
        .order_by(Job.status.desc(), Job.created_at, Job.id)
        .limit(1)
    ).first()


def _alone_allows(job_id: str) -> ColumnElement[bool]:
    """The rule of jobs that run alone, inside the claim's UPDATE (atomic under SQLite's write lock too, where
    processes share no claim lock): a job that runs alone is claimed while nothing runs; another while no job
    that runs alone is queued or running."""
    other = aliased(Job)
    this_alone = exists().where(other.id == job_id, other.alone)
    running = exists().where(other.status == "running")
    alone_active = exists().where(other.alone, other.status.in_(ACTIVE))
    return (this_alone & ~running) | (~this_alone & ~alone_active)


def _held_by(holder: str | None) -> ColumnElement[bool]:
    return Job.lease_holder.is_(None) if holder is None else Job.lease_holder == holder


def _fence(job: Job) -> tuple[ColumnElement[bool], ...]:
    """The condition of every write by a job's holder: still this attempt, still this holder, not finished."""
    return (
        Job.id == job.id,
        Job.attempts == job.attempts,
        Job.lease_holder == job.lease_holder,
        Job.status.not_in(TERMINAL),
    )


def _after_expiry(job: Job, max_attempts: int) -> tuple[dict[str, Any], str]:
    """What becomes of a job whose lease expired: (column values, a log line)."""
    lost = f"the replica holding this job ({job.worker or 'unnamed'}) stopped renewing its lease"
    if job.cancel_requested:
        return {"status": "canceled", "completed_at": utcnow()}, f"{lost}; canceled as asked\n"
    if not job.polled:
        return (
            {
                "status": "failed",
                "completed_at": utcnow(),
                "error_code": "interrupted",
                "error": "the gateway replica holding this job was lost while its client was waiting",
            },
            f"{lost}\n",
        )
    if job.status == "running" and job.attempts >= max_attempts:
        reason = f"the replica running this job was lost {job.attempts} times; giving up"
        return {"status": "failed", "completed_at": utcnow(), "error_code": "interrupted", "error": reason}, f"{lost}\n"
    return {"status": "queued"}, f"{lost}; the job is queued again (attempt {job.attempts + 1})\n"


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
