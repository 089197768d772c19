"""A real S3 API server for tests: moto's standalone server (`moto_server`, from PyPI) on 127.0.0.1 with
authentication on, so requests must be signed with an access key it issued (wrong credentials fail as
on MinIO or S3). Its request log (one line per HTTP request) shows what was transferred."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from svd_triton.launcher import free_port


class S3Server:
    """moto_server in a subprocess, one IAM user with full access, and its request log."""

    def __init__(self, folder: Path):
        self.log_path = folder / "s3.log"
        self.endpoint = f"http://127.0.0.1:{free_port()}"
        port = self.endpoint.rsplit(":", 1)[1]
        # The first three calls (create the user, its key, its policy) are unauthenticated, the rest are checked.
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([Path(sys.executable).parent / "moto_server", "-H", "127.0.0.1", "-p", port],
                                        stdout=self.log_path.open("w"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2)
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start:\n{self.log_path.read_text()}")
                time.sleep(0.2)
        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="svd")
        key = iam.create_access_key(UserName="svd")["AccessKey"]
        iam.put_user_policy(UserName="svd", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                   aws_access_key_id=self.key_id, aws_secret_access_key=self.secret)

    def upload(self, folder: Path, bucket: str, prefix: str = "") -> str:
        if bucket not in {b["Name"] for b in self.client.list_buckets()["Buckets"]}:
            self.client.create_bucket(Bucket=bucket)
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.client.upload_file(str(path), bucket, prefix + path.relative_to(folder).as_posix())
        return f"s3://{bucket}/{prefix}".rstrip("/")

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request so far, from the server's log."""
        pattern = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/[\d.]+\S*" (\d+)')
        return [(m[1], m[2], int(m[3])) for m in pattern.finditer(self.log_path.read_text())]

    def downloads(self, since: int = 0) -> list[str]:
        """Paths fetched whole (GET answered 200, not a ranged header read) after request number `since`."""
        return [path for method, path, status in self.requests()[since:] if method == "GET" and status == 200
                and "?" not in path]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def environment(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 at this server with its key."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": "us-east-1"}
