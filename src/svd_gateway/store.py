"""The durable store: jobs and uploaded files in a SQL database (SQLite in WAL mode by default, any
SQLAlchemy URL such as PostgreSQL for several replicas), their bytes in `Blobs` (a local folder, or an
S3-compatible bucket that replicas share).

Methods are blocking; async code calls them through `starlette.concurrency.run_in_threadpool`.
Bytes are stored before the row that refers to them is committed, so a crash can leave bytes without a
row but never a row without bytes; `sweep_orphans` removes the former.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, Integer, String, Text, create_engine, event, or_,
                        select, update)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from .blobs import FOLDERS, Blobs

TERMINAL = ("succeeded", "failed", "canceled")
POLLED = ("predictions", "videos", "stability")
"""Origins whose clients poll (or are called back): a restart re-queues their jobs. The others' clients wait
on the line, and are gone after a restart."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    """Lower-case base32 like Replicate's ids; 130 random bits."""
    return base64.b32encode(secrets.token_bytes(20)).decode().lower().rstrip("=")[:26]


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One generation: a Replicate prediction, or a request of the synchronous routes."""

    __tablename__ = "predictions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    origin: Mapped[str] = mapped_column(String(16))
    """predictions, videos (OpenAI's Videos API), stability (a client polls or is called back), or
    tir/forge/openai (a client waits on the line)."""
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    input: Mapped[dict] = mapped_column(JSON)
    """The input as given, with the image replaced by its digest."""
    params: Mapped[dict] = mapped_column(JSON)
    """The model's parameters."""
    image_sha256: Mapped[str] = mapped_column(String(64))
    base_url: Mapped[str] = mapped_column(String(500))
    logs: Mapped[str] = mapped_column(Text, default="")
    output_key: Mapped[str | None] = mapped_column(String(64), index=True)
    output_format: Mapped[str | None] = mapped_column(String(16))
    output_bytes: Mapped[int | None] = mapped_column(BigInteger)
    output_removed: Mapped[bool] = mapped_column(Boolean, default=False)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_field: Mapped[str | None] = mapped_column(String(64))
    webhook: Mapped[str | None] = mapped_column(String(2000))
    webhook_events: Mapped[list] = mapped_column(JSON, default=list)
    worker: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    predict_time: Mapped[float | None] = mapped_column(Float)


class Upload(Base):
    """A file uploaded with POST /v1/files (the replicate client uploads local file inputs this way)."""

    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Store:
    def __init__(self, database_url: str, blobs: Blobs):
        self.blobs = blobs
        sqlite = database_url.startswith("sqlite")
        self.engine = create_engine(database_url, pool_pre_ping=True,
                                    connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {})
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # Jobs

    def create(self, job: Job, image: bytes) -> Job:
        self.blobs.write(f"inputs/{job.id}", image)
        with self.session.begin() as session:
            session.add(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self.session() as session:
            return session.get(Job, job_id)

    def page(self, origin: str, cursor: tuple[datetime, str] | None, limit: int, newest_first: bool = True) -> list[Job]:
        """`limit` jobs of `origin` after `cursor` (created_at, id): newest first, or oldest first."""
        if newest_first:
            query = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
            if cursor:
                query = query.where(or_(Job.created_at < cursor[0], (Job.created_at == cursor[0]) & (Job.id < cursor[1])))
        else:
            query = select(Job).order_by(Job.created_at, Job.id)
            if cursor:
                query = query.where(or_(Job.created_at > cursor[0], (Job.created_at == cursor[0]) & (Job.id > cursor[1])))
        with self.session() as session:
            return list(session.scalars(query.where(Job.origin == origin).limit(limit)))

    def claim(self, job_id: str, worker: str) -> Job | None:
        """starting → processing for `worker`, atomically: no two replicas run one job."""
        with self.session.begin() as session:
            claimed = session.execute(update(Job).where(Job.id == job_id, Job.status == "starting")
                                      .values(status="processing", worker=worker, started_at=utcnow(),
                                              attempts=Job.attempts + 1)).rowcount
            return session.get(Job, job_id) if claimed else None

    def append_logs(self, job_id: str, lines: str) -> Job:
        """Add log lines; the job's `cancel_requested` tells whether a cancel was asked for (possibly
        through another replica)."""
        with self.session.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            job.logs = (job.logs or "") + lines
            return job

    def finish(self, job_id: str, status: str, **values) -> Job | None:
        """Set a terminal status unless the job already has one; None then."""
        with self.session.begin() as session:
            done = session.execute(update(Job).where(Job.id == job_id, Job.status.not_in(TERMINAL))
                                   .values(status=status, completed_at=utcnow(), **values)).rowcount
            job = session.get(Job, job_id)
        self.blobs.delete(f"inputs/{job_id}")
        return job if done else None

    def delete(self, job_id: str) -> bool:
        """Remove a finished job and its video; False when there is no such job or it is not finished."""
        with self.session.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or job.status not in TERMINAL:
                return False
            session.delete(job)
        if job.output_key and not job.output_removed:
            self.delete_output(job.output_key)
        return True

    def requeue(self, job_id: str, note: str) -> None:
        with self.session.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job.status == "processing":
                job.status, job.worker, job.logs = "starting", None, (job.logs or "") + note + "\n"

    def request_cancel(self, job_id: str) -> Job | None:
        """A queued job is canceled at once; a running one is flagged for the replica running it."""
        with self.session.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or job.status in TERMINAL:
                return job
            if job.status == "starting":
                job.status, job.completed_at = "canceled", utcnow()
            job.cancel_requested = True
        if job.status == "canceled":
            self.blobs.delete(f"inputs/{job_id}")
        return job

    def recover(self, worker: str, max_attempts: int) -> list[str]:
        """After a crash: this replica's interrupted jobs are re-queued (or failed, with the reason), and
        every queued job is returned to be scheduled, oldest first."""
        reasons = {}
        with self.session.begin() as session:
            for job in session.scalars(select(Job).where(Job.status == "processing", Job.worker == worker)):
                if job.origin not in POLLED:
                    reasons[job.id] = "the gateway restarted while its client was waiting"
                elif job.cancel_requested:
                    job.status, job.completed_at = "canceled", utcnow()
                elif job.attempts >= max_attempts:
                    reasons[job.id] = f"the gateway restarted during this job {job.attempts} times; giving up"
                else:
                    job.status, job.worker = "starting", None
                    job.logs = (job.logs or "") + f"gateway restarted; the job is queued again (attempt {job.attempts + 1})\n"
            for job in session.scalars(select(Job).where(Job.status == "starting", Job.origin.not_in(POLLED))):
                reasons[job.id] = "the gateway restarted while its client was waiting"
        for job_id, reason in reasons.items():
            self.finish(job_id, "failed", error=reason, error_code="interrupted")
        with self.session() as session:
            return list(session.scalars(select(Job.id).where(Job.status == "starting").order_by(Job.created_at)))

    # Bytes

    def read_input(self, job_id: str) -> bytes:
        return self.blobs.read(f"inputs/{job_id}")

    def save_output(self, video: bytes) -> str:
        key = secrets.token_urlsafe(24)
        self.blobs.write(f"outputs/{key}", video)
        return key

    def read_output(self, key: str) -> bytes:
        return self.blobs.read(f"outputs/{key}")

    def delete_output(self, key: str) -> None:
        self.blobs.delete(f"outputs/{key}")

    def job_with_output(self, origin: str, video: bytes) -> Job | None:
        """The finished job of `origin` whose stored video is exactly these bytes (a client sending back a video
        it downloaded), or None."""
        with self.session() as session:
            candidates = list(session.scalars(select(Job).where(
                Job.origin == origin, Job.output_bytes == len(video), Job.output_removed.is_(False))))
        return next((job for job in candidates if self.read_output(job.output_key) == video), None)

    def job_for_output(self, key: str) -> Job | None:
        with self.session() as session:
            return session.scalars(select(Job).where(Job.output_key == key, Job.output_removed.is_(False))).first()

    # Uploads

    def add_upload(self, name: str, content_type: str, source: Path | bytes, sha256: str, size: int,
                   seconds: float) -> Upload:
        """A file kept `seconds`: `source` is a complete file (moved in) or the bytes themselves."""
        upload = Upload(id=new_id(), name=name[:255], content_type=content_type[:255], size=size, sha256=sha256,
                        created_at=utcnow(), expires_at=utcnow() + timedelta(seconds=seconds))
        if isinstance(source, bytes):
            self.blobs.write(f"files/{upload.id}", source)
        else:
            self.blobs.move_in(f"files/{upload.id}", source)
        with self.session.begin() as session:
            session.add(upload)
        return upload

    def read_upload(self, upload_id: str) -> bytes:
        return self.blobs.read(f"files/{upload_id}")

    def get_upload(self, upload_id: str) -> Upload | None:
        with self.session() as session:
            upload = session.get(Upload, upload_id)
        return upload if upload and upload.expires_at > utcnow() else None

    def list_uploads(self) -> list[Upload]:
        with self.session() as session:
            return list(session.scalars(select(Upload).where(Upload.expires_at > utcnow()).order_by(Upload.created_at.desc())))

    def delete_upload(self, upload_id: str) -> bool:
        with self.session.begin() as session:
            upload = session.get(Upload, upload_id)
            if upload:
                session.delete(upload)
        self.blobs.delete(f"files/{upload_id}")
        return upload is not None

    # Retention

    def expire(self, *, max_outputs: int, output_seconds: float, max_output_bytes: int) -> int:
        """Drop outputs past their age, beyond the newest `max_outputs`, or beyond `max_output_bytes`
        in total; delete finished jobs and uploads past their age. Returns how many outputs were dropped."""
        cutoff = utcnow() - timedelta(seconds=output_seconds)
        dropped = []
        with self.session.begin() as session:
            kept, total = 0, 0
            for job in session.scalars(select(Job).where(Job.output_key.is_not(None), Job.output_removed.is_(False))
                                       .order_by(Job.completed_at.desc())):
                kept, total = kept + 1, total + (job.output_bytes or 0)
                if job.completed_at < cutoff or kept > max_outputs or total > max_output_bytes:
                    job.output_removed = True
                    dropped.append(job.output_key)
            for job in session.scalars(select(Job).where(Job.status.in_(TERMINAL), Job.completed_at < cutoff)):
                if job.output_key and not job.output_removed:
                    dropped.append(job.output_key)
                session.delete(job)
            expired_uploads = list(session.scalars(select(Upload.id).where(Upload.expires_at <= utcnow())))
            for upload_id in expired_uploads:
                session.delete(session.get(Upload, upload_id))
        for key in dropped:
            self.delete_output(key)
        for upload_id in expired_uploads:
            self.blobs.delete(f"files/{upload_id}")
        return len(dropped)

    def sweep_orphans(self, older_than: float = 0.0) -> list[str]:
        """Delete stored bytes that no row refers to (left by a crash between a write and its commit).
        Replicas sharing a bucket pass `older_than`, so as not to take another's bytes before its commit."""
        listed_before = utcnow() - timedelta(seconds=older_than)
        names = [name for folder in FOLDERS for name, modified in self.blobs.listing(folder) if modified <= listed_before]
        with self.session() as session:
            keep = {f"outputs/{key}" for key in session.scalars(select(Job.output_key).where(
                Job.output_key.is_not(None), Job.output_removed.is_(False)))}
            keep |= {f"inputs/{job_id}" for job_id in session.scalars(select(Job.id).where(Job.status.not_in(TERMINAL)))}
            keep |= {f"files/{upload_id}" for upload_id in session.scalars(select(Upload.id))}
        removed = [name for name in names if name not in keep]
        for name in removed:
            self.blobs.delete(name)
        return removed


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
