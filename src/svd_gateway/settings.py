"""The gateway's configuration: one dataclass, filled from CLI flags (svd-triton gateway --help)."""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Settings:
    triton_url: str = "localhost:8001"
    """Triton's gRPC address."""
    token: str | None = None
    """Required from clients as a bearer token, and sent on to Triton."""
    metrics_url: str | None = None
    """Triton's metrics endpoint (default: the Triton host, port 8002)."""
    public_url: str | None = None
    """Base URL of this gateway in links it hands out (default: the URL a request came in on)."""
    timeout: float = 900.0
    """Seconds one generation may take in Triton, queueing included."""
    max_body_bytes: int = 32 * 1024 * 1024
    header_seconds: float = 10.0
    """A request's line and headers must arrive within this many seconds (else 408 and the connection closes)."""
    body_seconds: float = 60.0
    """A request body must arrive within this many seconds (slow senders are cut off with 408)."""

    data_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "svd-triton" / "gateway")
    """Uploaded files, job inputs and output videos (and the SQLite database unless database_url is set)."""
    storage_url: str | None = None
    """`s3://bucket/prefix`: uploads, job inputs and videos in an S3-compatible bucket that replicas share
    (endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...); default: data_dir."""
    database_url: str | None = None
    """Any SQLAlchemy URL (postgresql+psycopg://...); default: SQLite (WAL) in data_dir."""
    replica_id: str = field(default_factory=socket.gethostname)
    """Stable per replica: after a crash a replica resumes the jobs it had claimed, never another's."""
    concurrency: int = 4
    """Generations this replica runs at once; the others wait as `starting`."""
    max_attempts: int = 2
    """A job interrupted by a gateway crash is retried until it has been started this many times."""
    max_wait: float = 60.0
    """Longest `Prefer: wait` (Replicate's sync mode) in seconds."""
    max_outputs: int = 1000
    output_seconds: float = 24 * 3600.0
    """Outputs (and finished jobs' records) expire after this; Replicate keeps outputs for an hour."""
    max_output_bytes: int = 10 * 1024**3
    upload_seconds: float = 24 * 3600.0

    region: str = "local"
    """The region the Forge routes report for this deployment."""
    gpu_hour_price: float | None = None
    """The operator's GPU-hour price in USD for Forge's cost estimates; without it every cost is null (never guessed)."""

    webhook_secret: str | None = None
    """`whsec_<base64>` signing secret; default: generated once and kept in data_dir."""
    webhook_allow: tuple[str, ...] = ()
    """Hosts or networks (CIDR) webhooks may target besides public addresses; private, loopback and
    link-local targets are refused unless listed here."""
    webhook_attempts: int = 5
    webhook_backoff: float = 1.0
    """Seconds before the first retry; doubled for each further one (capped at 60)."""
    webhook_timeout: float = 10.0

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.data_dir) / 'gateway.db'}"

    @property
    def metrics(self) -> str:
        return self.metrics_url or f"http://{self.triton_url.rsplit(':', 1)[0]}:8002/metrics"
