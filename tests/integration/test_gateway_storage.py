"""Uploads, job inputs and videos in an S3-compatible bucket (`storage_url`), against a real S3 API server:
two gateway replicas on one PostgreSQL database and one bucket, each with its own empty data_dir, serve
one another's uploads and videos; retention deletes objects; a bucket that can't be reached fails the start."""
from __future__ import annotations

import base64
import time

import pytest
import replicate
import requests

from tests.support import TOKEN
from tests.support.gateways import Gateway, settings_for
from tests.support.s3 import S3Server
from svd_gateway.blobs import open_blobs
from tests.support.videos import decode_video

SMALL = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2}
BUCKET = "svd-videos"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.client.create_bucket(Bucket=BUCKET)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
            patch.delenv(name, raising=False)
        for name, value in server.environment().items():
            patch.setenv(name, value)
        yield server
    server.stop()


def objects(s3: S3Server, prefix: str) -> set[str]:
    listed = s3.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {item["Key"][len(prefix):] for item in listed}


def test_two_replicas_share_uploads_and_videos_through_the_bucket(triton_stream, postgres_url, s3, sample_png,
                                                                tmp_path):
    import sqlalchemy

    name = f"storage_{int(time.time() * 1000)}"
    with sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    common = {"database_url": postgres_url.rsplit("/", 1)[0] + "/" + name, "storage_url": f"s3://{BUCKET}/shared"}
    with Gateway(settings_for(triton_stream, tmp_path / "a", replica_id="a", **common)) as first, \
            Gateway(settings_for(triton_stream, tmp_path / "b", replica_id="b", **common)) as second:
        on_first = replicate.Client(api_token=TOKEN, base_url=first.url)
        on_second = replicate.Client(api_token=TOKEN, base_url=second.url)
        on_second.poll_interval = 0.1
        (tmp_path / "photo.png").write_bytes(sample_png)
        with open(tmp_path / "photo.png", "rb") as photo:
            upload = on_first.files.create(photo)  # kept by replica a ...
        prediction = on_second.predictions.create(version="any", input={"input_image": upload.urls["get"],
                                                                        "seed": 5, **SMALL})
        prediction.wait()  # ... read and run by replica b
        assert prediction.status == "succeeded", prediction.error
        assert prediction.output.rsplit("/", 1)[1].startswith(f"{prediction.id}_")  # a signed link to its video
        assert len(objects(s3, "shared/outputs/")) == 1 and objects(s3, "shared/files/") == {upload.id}
        assert objects(s3, "shared/inputs/") == set()  # a finished job's input is deleted
        through_first = prediction.output.replace(second.url, first.url)
        video = requests.get(through_first, timeout=30)
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        decoded = decode_video(video.content, "mp4")
        assert decoded.num_frames == 4 and decoded.frames.shape[1:3] == (64, 64)
        ranged = requests.get(through_first, headers={"Range": "bytes=4-11"}, timeout=30)
        assert ranged.status_code == 206 and ranged.content == video.content[4:12] == b"ftypisom"
        assert ranged.headers["content-range"] == f"bytes 4-11/{len(video.content)}"
    for replica in ("a", "b"):  # nothing of the jobs' bytes on the replicas' own disks
        assert not [path for path in (tmp_path / replica).rglob("*") if path.is_file() and path.suffix != ".db"
                    and path.name != "webhook_secret"]


def test_retention_deletes_the_objects_and_their_urls(triton_stream, s3, sample_png, tmp_path):
    image = base64.b64encode(sample_png).decode()
    settings = settings_for(triton_stream, tmp_path, storage_url=f"s3://{BUCKET}/retention", max_outputs=1)
    with Gateway(settings) as gateway:
        client = replicate.Client(api_token=TOKEN, base_url=gateway.url)
        client.poll_interval = 0.1
        made = []
        for seed in (1, 2):
            prediction = client.predictions.create(version="any", input={"image": image, "seed": seed, **SMALL})
            prediction.wait()
            made.append(prediction)
        deadline = time.monotonic() + 30  # retention runs just after a job is marked succeeded
        while len(objects(s3, "retention/outputs/")) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(objects(s3, "retention/outputs/")) == 1
        assert requests.get(made[0].output, timeout=30).status_code == 404
        assert requests.get(made[1].output, timeout=30).status_code == 200


def test_a_bucket_that_cannot_be_reached_is_named_at_start(s3, tmp_path):
    with pytest.raises(ValueError, match="s3://no-such-bucket/x: the bucket cannot be reached") as refused:
        open_blobs("s3://no-such-bucket/x", tmp_path)
    assert s3.secret not in str(refused.value)
    with pytest.raises(ValueError, match="expected s3://bucket/prefix"):
        open_blobs("gs://elsewhere", tmp_path)
