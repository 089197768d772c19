"""The gateway's configuration, declared once: the `Settings` dataclass. Each field is also a flag of
`svd-triton gateway` (`add_arguments`: triton_url → --triton-url, with the field's type, default and help),
and `from_arguments` turns parsed flags back into Settings. Standard library only: the thin client's CLI
builds its parser from this module without the gateway's dependencies."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dataclasses import _MISSING_TYPE


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    default_factory: Callable[[], Any] | _MISSING_TYPE = MISSING,
    env: Callable[[], str | None] | None = None,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A Settings field and what its flag needs. `env` reads the flag's default from the environment when the
    CLI runs (Settings built in code never read it); written as `lambda: os.environ.get("NAME")` so that the
    variable's name is stated where it is read (and is there for the deploy-drift test's reading of the code)."""
    metadata = {"help": help, "env": env, "metavar": metavar, "choices": choices}
    if default_factory is MISSING:  # field()'s own default: its overloads take a factory or nothing
        return field(default=default, metadata=metadata)
    return field(default=default, default_factory=default_factory, metadata=metadata)


@dataclass
class Settings:
    triton_url: str = setting("localhost:8001", "Triton's gRPC address", metavar="HOST:PORT")
    token: str | None = setting(
        None,
        "bearer token clients must send, also sent to Triton (default $SVD_TRITON_TOKEN)",
        env=lambda: os.environ.get("SVD_TRITON_TOKEN"),
    )
    no_auth: bool = setting(
        False,
        "serve without a key on a non-loopback address (refused otherwise): anyone who "
        "reaches the port can generate, read and cancel every job",
    )
    tls_certfile: Path | None = setting(
        None, "serve HTTPS with this PEM certificate chain (with --tls-keyfile)", metavar="PEM"
    )
    tls_keyfile: Path | None = setting(None, "the certificate's PEM private key (with --tls-certfile)", metavar="PEM")
    metrics_listen: str | None = setting(
        None,
        "also serve the gateway's own /metrics without a key on this address (for Prometheus inside a cluster: keep "
        "it off the internet); on the API port /metrics needs a key with the admin scope",
        metavar="HOST:PORT",
    )
    metrics_url: str | None = setting(
        None, "Triton's metrics endpoint (default: Triton's host, port 8002)", metavar="URL"
    )
    public_url: str | None = setting(
        None,
        "base URL of this gateway in the links it hands out (default: the URL a request came in on)",
        metavar="URL",
    )
    timeout: float = setting(900.0, "seconds one generation may take in Triton, queueing included")
    max_body_bytes: int = setting(32 * 1024 * 1024, "largest request body in bytes; a larger one is answered 413")
    header_seconds: float = setting(
        10.0, "a request's line and headers must arrive within this many seconds (else 408 and the connection closes)"
    )
    body_seconds: float = setting(
        60.0, "a request body must arrive within this many seconds (slow senders are cut off with 408)"
    )

    data_dir: Path = setting(
        help="uploads, job inputs, videos and the SQLite database unless --database-url is "
        "set (default ~/.cache/svd-triton/gateway)",
        default_factory=lambda: Path.home() / ".cache" / "svd-triton" / "gateway",
        metavar="DIR",
    )
    storage_url: str | None = setting(
        None,
        "keep uploads, job inputs and videos in an S3-compatible bucket "
        "(shared by replicas; endpoint and credentials from AWS_ENDPOINT_URL, "
        "AWS_ACCESS_KEY_ID, ...; env SVD_GATEWAY_STORAGE_URL); default: "
        "--data-dir",
        env=lambda: os.environ.get("SVD_GATEWAY_STORAGE_URL"),
        metavar="s3://BUCKET/PREFIX",
    )
    database_url: str | None = setting(
        None,
        "any SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: "
        "SQLite (WAL) in --data-dir; env SVD_GATEWAY_DATABASE_URL)",
        env=lambda: os.environ.get("SVD_GATEWAY_DATABASE_URL"),
        metavar="URL",
    )
    replica_id: str = setting(
        help="this replica's name in job records, logs and metrics (correctness never "
        "depends on it: a Deployment's random pod names are fine) (default: the host name)",
        default_factory=socket.gethostname,
        metavar="ID",
    )
    concurrency: int = setting(
        4,
        "generations this replica runs at once, claimed from the queue all replicas share "
        "(0: an API-only replica that queues jobs for the others and refuses synchronous routes)",
    )
    max_attempts: int = setting(
        3,
        "a job whose replica was lost mid-run (crash, partition, scale-down), or whose model call was lost to a "
        "fault of Triton (unreachable, restarting, its model process died), is started again until it has been "
        "started this many times, then failed with the reason",
    )
    retry_backoff: float = setting(
        1.0, "seconds before a job lost to a Triton fault is started again; doubled for each further attempt (to 30)"
    )
    lease_seconds: float = setting(
        15.0, "a running job's lease: when its replica stops renewing it for this long, any replica takes the job over"
    )
    heartbeat_seconds: float = setting(
        5.0,
        "how often a replica renews its leases, looks for cancels and takes over "
        "expired jobs (keep well under --lease-seconds)",
    )
    wake: str = setting(
        "notify",
        "how idle replicas learn of new jobs: notify (PostgreSQL LISTEN/NOTIFY, with "
        "--poll-seconds as a fallback) or poll",
        choices=("notify", "poll"),
    )
    poll_seconds: float = setting(2.0, "an idle replica looks for queued jobs this often")
    drain_seconds: float = setting(
        20.0,
        "on SIGTERM: stop claiming, let running jobs finish for this long, then "
        "release the rest to the other replicas (keep below Kubernetes' "
        "terminationGracePeriodSeconds)",
    )
    max_wait: float = setting(60.0, "longest `Prefer: wait` (Replicate's sync mode) in seconds")
    max_outputs: int = setting(1000, "outputs kept at most per owner (its oldest dropped first)")
    output_seconds: float = setting(
        24 * 3600.0, "how long outputs and finished jobs' records are kept (Replicate keeps outputs for an hour)"
    )
    max_output_bytes: int = setting(10 * 1024**3, "bytes of outputs kept at most per owner (its oldest dropped first)")
    upload_seconds: float = setting(24 * 3600.0, "how long uploaded files are kept")
    link_seconds: float = setting(
        3600.0,
        "how long a video link handed out in a job's answer or webhook works (each read of the job gives a fresh "
        "one; Replicate's last an hour)",
    )

    region: str = setting("local", "region name the Forge routes report for this deployment")
    gpu_hour_price: float | None = setting(
        None,
        "the operator's GPU-hour price for Forge's cost estimates; without it every cost is null (never guessed)",
        metavar="USD",
    )

    webhook_secret: str | None = setting(
        None,
        "the bootstrap owner's whsec_<base64> webhook signing key (default: one made once and kept in the store; "
        "other owners' are made for them; env SVD_GATEWAY_WEBHOOK_SECRET)",
        env=lambda: os.environ.get("SVD_GATEWAY_WEBHOOK_SECRET"),
        metavar="KEY",
    )
    webhook_allow: tuple[str, ...] = setting(
        (),
        "also allow webhooks and image URLs to this host or network (CIDR; "
        "repeatable): private, loopback and link-local targets are refused "
        "otherwise",
        metavar="HOST_OR_CIDR",
    )
    webhook_attempts: int = setting(5, "deliveries of one webhook event at most")
    webhook_backoff: float = setting(
        1.0, "seconds before a webhook's first retry; doubled for each further one (capped at 60)"
    )
    webhook_timeout: float = setting(10.0, "seconds one webhook delivery may take")
    fetch_seconds: float = setting(
        10.0, "seconds fetching one image URL may take, redirects included (its size is held to --max-body-bytes)"
    )

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.data_dir) / 'gateway.db'}"

    @property
    def metrics(self) -> str:
        return self.metrics_url or f"http://{self.triton_url.rsplit(':', 1)[0]}:8002/metrics"

    def refusal(self, host: str) -> str | None:
        """Why the gateway must not start listening on `host` with these settings, or None when it may."""
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            return "--tls-certfile and --tls-keyfile go together: give both, or neither for plain HTTP"
        if not self.token and not self.no_auth and not is_loopback(host):
            return (
                f"no key: set $SVD_TRITON_TOKEN (or --token) before listening on {host}, bind --host 127.0.0.1, "
                "or pass --no-auth to serve everyone who reaches the port"
            )
        return None


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) is reachable from this machine alone."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _flag_kind(hint: Any) -> tuple[type, bool]:
    """(the type a flag's value is parsed as, whether the flag repeats) for a field's annotation."""
    if typing.get_origin(hint) is tuple:  # tuple[str, ...]: one value each time the flag is given
        return typing.get_args(hint)[0], True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:  # X | None
        return next(arg for arg in typing.get_args(hint) if arg is not type(None)), False
    return hint, False


STORE_FIELDS = ("database_url", "data_dir")
"""What commands that only open the job store (migrate, keys) take."""


def add_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """One flag per Settings field (or per field named in `only`). A flag not given is left out of the namespace,
    so Settings' own default applies; one with an environment variable defaults to it when that is set (even to
    an empty value)."""
    hints = typing.get_type_hints(Settings)
    for spec in fields(Settings):
        if only is not None and spec.name not in only:
            continue
        kind, repeats = _flag_kind(hints[spec.name])
        help, default = spec.metadata["help"], spec.default
        if default not in (MISSING, None, ()):
            help += f" (default {default:g})" if isinstance(default, float) else f" (default {default})"
        found = spec.metadata["env"]() if spec.metadata["env"] else None
        if kind is bool:  # a switch: given means True
            parser.add_argument(
                "--" + spec.name.replace("_", "-"),
                dest=spec.name,
                action="store_true",
                help=help,
                default=argparse.SUPPRESS,
            )
            continue
        parser.add_argument(
            "--" + spec.name.replace("_", "-"),
            dest=spec.name,
            type=kind,
            help=help,
            action="append" if repeats else "store",
            choices=spec.metadata["choices"],
            metavar=spec.metadata["metavar"] or ("N" if kind is int else None),
            default=argparse.SUPPRESS if found is None else found,
        )


def from_arguments(args: argparse.Namespace) -> Settings:
    """Settings from what add_arguments parsed (other attributes of `args` are not Settings' business)."""
    hints = typing.get_type_hints(Settings)
    given = {spec.name: getattr(args, spec.name) for spec in fields(Settings) if hasattr(args, spec.name)}
    values: dict[str, Any] = {
        name: tuple(value) if _flag_kind(hints[name])[1] else value for name, value in given.items()
    }
    return Settings(**values)
