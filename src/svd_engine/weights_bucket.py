"""Weights in an S3-compatible bucket (S3, MinIO, Ceph, R2): `s3://bucket/prefix` as a model source.

The endpoint and credentials come from boto3's standard chain (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3,
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_DEFAULT_REGION, ~/.aws/config), never from the
model configuration. `fetch` copies what the pipeline needs into a local cache keyed by bucket,
prefix and the objects' ETags, so a restart or a second instance loads without downloading again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from svd_contract import S3Location

from .errors import ModelLoadError
from .weights import (
    CONFIG_SUFFIXES,
    MODEL_INDEX,
    SERVED_PIPELINES,
    WeightsTree,
    choose_variant,
    copy_files,
    is_weights_file,
    pipeline_root,
    require_loadable,
    write_complete,
)

CACHE_ENV = "SVD_WEIGHTS_CACHE"
COMPLETE_MARKER = ".complete.json"
CREDENTIALS_HINT = (
    "the endpoint and credentials come from AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3), "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and AWS_DEFAULT_REGION"
)
log = logging.getLogger(__name__)


def cache_root() -> Path:
    """SVD_WEIGHTS_CACHE, else svd-triton/weights under HF_HOME (where the hub's weights are cached too)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "svd-triton" / "weights"


class BucketTree(WeightsTree):
    """The pipeline folder under `s3://bucket/prefix` (model_index.json there or one folder down)."""

    def __init__(self, source: str):
        import boto3
        from boto3.s3.transfer import TransferConfig

        try:
            location = S3Location.parse(source)
        except ValueError as error:
            raise ModelLoadError(str(error)) from None
        self.bucket = bucket = location.bucket
        prefix = location.prefix
        self.transfer = TransferConfig(max_concurrency=4)
        where = str(location)
        with s3_errors(where):
            self.client = boto3.session.Session().client("s3")
            objects = {}
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/"):  # folder markers some tools create
                        objects[item["Key"][len(prefix) :]] = (item["Size"], item["ETag"])
        entries = {key.split("/")[0] + ("/" if "/" in key else "") for key in objects}
        holders = [
            key[: -len(MODEL_INDEX)] for key in objects if key.count("/") == 1 and key.endswith("/" + MODEL_INDEX)
        ]
        root = pipeline_root(where, entries, holders)
        self.prefix = prefix + root
        self.location = str(S3Location(bucket, self.prefix)).rstrip("/")
        depth_two = {
            key[len(root) :]: value
            for key, value in objects.items()
            if key.startswith(root) and key[len(root) :].count("/") <= 1
        }
        self.files = {key: size for key, (size, _) in depth_two.items()}
        self.etags = {key: etag for key, (_, etag) in depth_two.items()}
        self.read_whole: dict[str, bytes] = {}

    def read(self, path: str, length: int | None = None) -> bytes:
        extra = {"Range": f"bytes=0-{length - 1}"} if length is not None else {}
        with s3_errors(f"{self.location}/{path}"):
            data = self.client.get_object(Bucket=self.bucket, Key=self.prefix + path, **extra)["Body"].read()
        if length is None:
            self.read_whole[path] = data
        return data

    def copy(self, path: str, target: Path) -> None:
        if path in self.read_whole:  # a config the check has read already
            write_complete(target, lambda partial: partial.write(self.read_whole[path]))
            return
        # boto3 writes to a temporary name beside `target` and renames it once the download is complete.
        with s3_errors(f"{self.location}/{path}"):
            self.client.download_file(self.bucket, self.prefix + path, str(target), Config=self.transfer)

    def snapshot_key(self, variant: str | None) -> str:
        """Changes when any config or weights object under the pipeline changes (its ETag does)."""
        tracked = sorted(
            (p, self.etags[p])
            for p in self.files
            if p == MODEL_INDEX or p.endswith(CONFIG_SUFFIXES) or is_weights_file(p)
        )
        return hashlib.sha256(json.dumps([self.bucket, self.prefix, variant, tracked]).encode()).hexdigest()[:16]


@contextmanager
def s3_errors(where: str):
    """Turn boto3's errors into a ModelLoadError that says where and why, with no credentials in it."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as error:
        details = error.response.get("Error", {})
        code = details.get("Code", "error")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        about_credentials = status in (401, 403) or any(
            word in code for word in ("Credential", "Signature", "AccessKey")
        )
        raise ModelLoadError(
            f"{where}: {code}: {details.get('Message') or f'HTTP {status}'}"
            + (f"; {CREDENTIALS_HINT}" if about_credentials else "")
        ) from None
    except BotoCoreError as error:
        raise ModelLoadError(f"{where}: {error}; {CREDENTIALS_HINT}") from None


def fetch(source: str, *, half: bool, served: tuple[str, ...] = SERVED_PIPELINES) -> Path:
    """A local folder with the pipeline under `source` (s3://…), downloaded unless already cached.

    The cache entry is complete only once its marker is written; instances that load at the same
    time take turns on a lock, so only the first downloads.
    """
    tree = BucketTree(source)
    variant = choose_variant(tree.files, half)
    home = cache_root() / tree.bucket / (tree.prefix.strip("/").replace("/", "--") or "--root")
    snapshot = home / tree.snapshot_key(variant)
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (snapshot / COMPLETE_MARKER).is_file():
            log.info("%s: using the cached copy in %s", tree.location, snapshot)
            return snapshot
        inspection = require_loadable(tree, half=half, served=served)
        etags = {path: tree.etags[path] for path in inspection.files}
        snapshot.mkdir(exist_ok=True)
        for leftover in [
            p for p in snapshot.rglob("*") if p.is_file() and p.relative_to(snapshot).as_posix() not in etags
        ]:
            leftover.unlink()  # temporary files of an interrupted download
        _link_unchanged(home, snapshot, etags)
        # Files already here have these ETags and are complete (a file gets its final name only then).
        copy_files(tree, [path for path in inspection.files if not (snapshot / path).is_file()], snapshot)
        marker = {"source": tree.location, "files": etags}
        (snapshot / (COMPLETE_MARKER + ".partial")).write_text(json.dumps(marker, indent=1))
        os.replace(snapshot / (COMPLETE_MARKER + ".partial"), snapshot / COMPLETE_MARKER)
        for older in home.iterdir():  # earlier versions of the same objects
            if older.is_dir() and older != snapshot:
                shutil.rmtree(older, ignore_errors=True)
    return snapshot


def _link_unchanged(home: Path, snapshot: Path, etags: dict[str, str]) -> None:
    """Hard-link files whose ETag is unchanged from an earlier complete copy, so only changed objects download."""
    for older in home.glob(f"*/{COMPLETE_MARKER}"):
        for path, etag in json.loads(older.read_text())["files"].items():
            source, target = older.parent / path, snapshot / path
            if etags.get(path) == etag and source.is_file() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)
