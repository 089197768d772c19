"""`s3://bucket/prefix` locations: model sources (weights in a bucket) and the gateway's storage_url."""

from __future__ import annotations

from dataclasses import dataclass

S3_SCHEME = "s3://"


def is_s3_url(url: str) -> bool:
    return url.startswith(S3_SCHEME)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    """'' for the bucket's top, else ending with '/'."""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """The bucket and prefix of `s3://bucket/prefix`; ValueError naming the URL otherwise."""
        if not is_s3_url(url):
            raise ValueError(f"{url!r} is not an s3://bucket/prefix URL")
        bucket, _, prefix = url[len(S3_SCHEME) :].partition("/")
        if not bucket:
            raise ValueError(f"{url!r} names no bucket; expected s3://bucket/prefix")
        return cls(bucket, prefix.strip("/") + "/" if prefix.strip("/") else "")

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}"
