"""Where the job store keeps bytes: uploaded files, job inputs and output videos, under names like
`outputs/<key>`. A local folder by default; an S3-compatible bucket (`--storage-url s3://bucket/prefix`)
so that several gateway replicas share one another's uploads and videos.

Methods are blocking; async code calls them through `run_in_threadpool`. A name only ever holds
complete bytes: the folder writes to a temporary name and renames, S3 puts objects whole.

Bytes on their way in (an upload being received) and local copies (a video being decoded into stills) go to
`scratch`, a folder of its own beside FOLDERS: Store.sweep_orphans lists FOLDERS and deletes what no row
names, which would include such files while they are in use. The folder's scratch is under its root, so an
upload's rename into `files/` stays on one filesystem, atomic.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from fastapi.responses import FileResponse, Response, StreamingResponse

from svd_contract import S3Location, is_s3_url

from .errors import GatewayError

FOLDERS = ("files", "inputs", "outputs")
SCRATCH_GRACE = 3600.0
"""Files this old in scratch when a gateway starts were left by a process that stopped mid-way; younger
ones may be in use by another replica sharing the folder."""
CHUNK = 1024 * 1024
RANGE = re.compile(r"^bytes=\d*-\d*$")


class Blobs(Protocol):
    scratch: Path
    """A local folder for temporary files (an upload being received, a video being decoded), never swept."""

    def write(self, name: str, data: bytes) -> None: ...

    def move_in(self, name: str, source: str | Path) -> None:
        """Store the complete file `source` under `name`; `source` is gone afterwards."""

    def read(self, name: str) -> bytes:
        """The bytes under `name`; FileNotFoundError when there are none."""

    def delete(self, name: str) -> None:
        """Remove `name` if it exists."""

    def listing(self, folder: str) -> Iterator[tuple[str, datetime]]:
        """Every name under `folder` (as `outputs/abc`) with when it was written (naive UTC)."""

    def response(self, name: str, media_type: str | None, range_header: str | None) -> Response:
        """An HTTP response serving `name` (with byte ranges, which browsers' video players ask for)."""


class FolderBlobs:
    def __init__(self, root: Path):
        self.root = Path(root)
        for folder in FOLDERS:
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.scratch = scratch_folder(self.root / "scratch")

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, name: str, data: bytes) -> None:
        partial = self.path(name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, self.path(name))

    def move_in(self, name: str, source: str | Path) -> None:
        os.replace(source, self.path(name))

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def listing(self, folder: str) -> Iterator[tuple[str, datetime]]:
        for path in (self.root / folder).iterdir():
            try:
                modified = path.stat().st_mtime
            except FileNotFoundError:  # deleted since the folder was read (a job deleted, a write's rename)
                continue
            yield f"{folder}/{path.name}", datetime.fromtimestamp(modified, UTC).replace(tzinfo=None)

    def response(self, name: str, media_type: str | None, range_header: str | None) -> Response:
        if not self.path(name).is_file():
            raise FileNotFoundError(name)
        return FileResponse(self.path(name), media_type=media_type)  # Starlette answers Range itself


class BucketBlobs:
    """Objects under `s3://bucket/prefix/`. The endpoint and credentials come from boto3's standard chain
    (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE, AWS_DEFAULT_REGION), as for
    s3:// model sources; videos are served through the gateway, so clients never need the bucket's address."""

    def __init__(self, url: str, scratch: Path):
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            location = S3Location.parse(url)
        except ValueError as error:
            raise ValueError(f"storage_url: {error}") from None
        self.bucket, self.prefix = location.bucket, location.prefix
        self.client = boto3.session.Session().client("s3")
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as error:
            raise ValueError(
                f"storage_url {url}: the bucket cannot be reached ({error}); the endpoint and credentials "
                "come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from None
        self.scratch = scratch_folder(Path(scratch))

    def key(self, name: str) -> str:
        return self.prefix + name

    def write(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data)

    def move_in(self, name: str, source: str | Path) -> None:
        self.client.upload_file(str(source), self.bucket, self.key(name))
        Path(source).unlink()

    def read(self, name: str) -> bytes:
        return self._get(name)["Body"].read()

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def listing(self, folder: str) -> Iterator[tuple[str, datetime]]:
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.key(folder + "/")
        ):
            for item in page.get("Contents", []):
                yield (
                    item["Key"][len(self.prefix) :],
                    item["LastModified"].astimezone(UTC).replace(tzinfo=None),
                )

    def response(self, name: str, media_type: str | None, range_header: str | None) -> Response:
        wanted = {"Range": range_header} if range_header and RANGE.match(range_header) else {}
        found = self._get(name, **wanted)
        headers = {"Content-Length": str(found["ContentLength"]), "Accept-Ranges": "bytes"}
        if "ContentRange" in found:
            headers["Content-Range"] = found["ContentRange"]
        return StreamingResponse(
            found["Body"].iter_chunks(CHUNK),
            status_code=206 if "ContentRange" in found else 200,
            media_type=media_type,
            headers=headers,
        )

    def _get(self, name: str, **extra) -> dict:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(name), **extra)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(name) from None
            if code == "InvalidRange":
                raise GatewayError(416, "invalid_request", "the requested range is outside the video") from None
            raise


def scratch_folder(path: Path) -> Path:
    """`path`, made if missing, without what stopped processes left there (SCRATCH_GRACE)."""
    path.mkdir(parents=True, exist_ok=True)
    stale = time.time() - SCRATCH_GRACE
    for leftover in path.iterdir():
        with contextlib.suppress(FileNotFoundError):  # another replica's, finished meanwhile
            if leftover.is_file() and leftover.stat().st_mtime < stale:
                leftover.unlink()
    return path


def open_blobs(storage_url: str | None, data_dir: Path) -> Blobs:
    if not storage_url:
        return FolderBlobs(data_dir)
    if not is_s3_url(storage_url):
        raise ValueError(f"storage_url {storage_url!r}: expected s3://bucket/prefix (or none, for data_dir)")
    return BucketBlobs(storage_url, Path(data_dir) / "scratch")
