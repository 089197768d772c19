"""A gateway killed with SIGKILL mid-run and started again on the same store (SQLite and PostgreSQL):
once the dead process's lease expires the interrupted prediction runs again, queued ones run, a synchronous
request whose client is gone is failed with a reason; nothing is stuck in `processing`, nothing is lost, no
orphan files remain."""
from __future__ import annotations

import base64
import threading
import time

import pytest
import replicate
import requests
import sqlalchemy

from tests.support import TOKEN
from tests.support.gateways import Gateway, GatewayProcess
from svd_gateway import Settings
from svd_gateway.blobs import FolderBlobs
from svd_gateway.store import TERMINAL, Job, Store

SMALL = {"num_frames": 4, "width": 64, "height": 64}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return None
    server = request.getfixturevalue("postgres_url")
    name = f"restart_{int(time.time() * 1000)}"
    with sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT").connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    return server.rsplit("/", 1)[0] + "/" + name


def test_sigkill_mid_run_then_restart_loses_nothing(triton_stream, sample_png, tmp_path, database_url):
    data_dir = tmp_path / "data"
    gateway = GatewayProcess("--triton-url", triton_stream.grpc_url, "--token", TOKEN, "--data-dir", str(data_dir),
                             "--concurrency", "1", "--replica-id", "replica-a", "--lease-seconds", "2",
                             "--heartbeat-seconds", "0.5",
                             *(["--database-url", database_url] if database_url else []), log=tmp_path / "gateway.log")
    image = base64.b64encode(sample_png).decode()
    try:
        gateway.start()
        client = replicate.Client(api_token=TOKEN, base_url=gateway.url)
        client.poll_interval = 0.1
        running = client.predictions.create(version="any", input={"image": image, "num_inference_steps": 40, **SMALL})
        queued = [client.predictions.create(version="any", input={"image": image, "num_inference_steps": 2, **SMALL})
                  for _ in range(2)]
        waiting = threading.Thread(target=_post_quietly, args=(f"{gateway.url}/predict", {"image": image, **SMALL}))
        waiting.start()  # a synchronous client, queued behind the others, whose connection the crash cuts
        deadline = time.monotonic() + 60
        while "denoising" not in (running.logs or "") and time.monotonic() < deadline:
            time.sleep(0.1)
            running.reload()
        assert running.status == "processing"
        gateway.kill()
        waiting.join(timeout=30)

        gateway.start()
        for prediction in [running, *queued]:
            prediction.wait()
            assert prediction.status == "succeeded", prediction.error
            assert requests.get(prediction.output, timeout=30).status_code == 200
        assert "stopped renewing its lease; the job is queued again (attempt 2)" in running.logs
    finally:
        gateway.stop()

    store = Store(database_url or f"sqlite:///{data_dir / 'gateway.db'}", FolderBlobs(data_dir))
    with store.session() as session:
        jobs = list(session.scalars(sqlalchemy.select(Job)))
    store.close()
    assert len(jobs) == 4 and all(job.status in TERMINAL for job in jobs)
    [synchronous] = [job for job in jobs if job.origin == "tir"]
    assert synchronous.status == "failed" and "client was waiting" in synchronous.error
    assert not list((data_dir / "inputs").iterdir())
    outputs = {path.name for path in (data_dir / "outputs").iterdir()}
    assert outputs == {job.output_key for job in jobs if job.output_key}


def _post_quietly(url: str, body: dict) -> None:
    try:
        requests.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    except requests.ConnectionError:
        pass


def test_two_replicas_on_one_postgresql_share_jobs_and_a_cancel_reaches_the_runner(triton_stream, postgres_url,
                                                                                   sample_png, tmp_path):
    name = f"replicas_{int(time.time() * 1000)}"
    with sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    database = postgres_url.rsplit("/", 1)[0] + "/" + name
    common = {"triton_url": triton_stream.grpc_url, "token": TOKEN, "database_url": database, "data_dir": tmp_path}
    with Gateway(Settings(replica_id="a", **common)) as first, Gateway(Settings(replica_id="b", **common)) as second:
        on_first = replicate.Client(api_token=TOKEN, base_url=first.url)
        on_second = replicate.Client(api_token=TOKEN, base_url=second.url)
        on_second.poll_interval = 0.1
        image = base64.b64encode(sample_png).decode()
        slow = on_first.predictions.create(version="any", input={"image": image, "num_inference_steps": 100, **SMALL})
        watched = on_second.predictions.get(slow.id)  # run by replica a, watched through replica b
        deadline = time.monotonic() + 60
        while "denoising" not in (watched.logs or "") and time.monotonic() < deadline:
            time.sleep(0.1)
            watched.reload()
        assert watched.status == "processing"
        on_second.predictions.cancel(slow.id)  # replica b flags it; replica a cancels its stream
        watched.wait()
        assert watched.status == "canceled" and "100/100" not in watched.logs
        quick = on_first.predictions.create(version="any", input={"image": image, "num_inference_steps": 2, **SMALL})
        seen = on_second.predictions.get(quick.id)
        seen.wait()
        assert seen.status == "succeeded" and requests.get(seen.output, timeout=30).status_code == 200
        assert len(on_second.predictions.list().results) == 2


def test_files_no_job_refers_to_are_swept_unless_young(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}", FolderBlobs(tmp_path))
    strays = ["outputs/stray", "inputs/gone", "files/upload.partial"]
    for name in strays:
        (tmp_path / name).write_bytes(b"x")
    upload = tmp_path / "upload"
    upload.write_bytes(b"kept")
    kept = store.add_upload("default", "a.png", "image/png", upload, "0" * 64, 4, 60)
    assert store.sweep_orphans(older_than=600) == []  # possibly another replica's, about to be committed
    assert sorted(store.sweep_orphans()) == sorted(strays)
    assert not any((tmp_path / name).exists() for name in strays)
    assert store.read_upload(kept.id) == b"kept"
    store.close()
