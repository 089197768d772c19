"""Gateway replicas as one work queue, as processes on one real PostgreSQL (Debian's, on loopback), one
shared data folder and one real tritonserver (tiny model, streaming): a burst is run by every replica, a
SIGKILLed replica's jobs are taken over, SIGTERM drains and hands over, a paused (partitioned) replica's late
finish is refused, a cancel reaches a job on another replica, /metrics agrees with the store, replicas
started at the same instant migrate one empty database, an old database is migrated in place, and a job claimed
while a lease renewal is in flight runs to its end.

Leases are short here (2 s, heartbeat 0.5 s) by configuration; every wait is for a condition, with a
timeout that only bounds a hung run."""
from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import sys
import threading

import pytest
import replicate
import requests
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from prometheus_client.parser import text_string_to_metric_families

from tests.support import TOKEN
from tests.support.cluster import cluster, jobs_in, new_database
from tests.support.gateways import Gateway, GatewayProcess, settings_for
from tests.support.old_store import create_old_schema
from tests.support.videos import decode_video
from tests.support.waiting import until
from tests.support.webhooks import Receiver
from tests.unit import test_store_queue as store_queue
from svd_gateway import Settings
from svd_gateway.accounts import BOOTSTRAP_KEY, BOOTSTRAP_OWNER
from svd_gateway.blobs import FolderBlobs
from svd_gateway.jobs import JobRunner
from svd_gateway.metrics import GatewayMetrics
from svd_gateway.outbound import AllowList
from svd_gateway.store import TERMINAL, Base, Job, Store, utcnow
from svd_gateway.webhooks import Webhooks
from svd_triton.client import AsyncSVDClient

SMALL = {"num_frames": 4, "width": 64, "height": 64}
QUICK = {**SMALL, "num_inference_steps": 2}
LONG = {**SMALL, "num_inference_steps": 100}
"""Long enough to be caught running (each step streams a progress line), short enough to finish."""
LONGER = {"num_frames": 8, "height": 64, "num_inference_steps": 100, "segments": 4}
"""With a width: within the tiny deployment's work budget and segment limit; about 15 s alone on an idle 2-core
CPU, longer under load (it is canceled once handed over)."""
WAIT = 180
"""Seconds any one condition may take before the run is called hung (a bound, not a measurement)."""


@pytest.fixture(scope="module")
def image(sample_png) -> str:
    return base64.b64encode(sample_png).decode()


@pytest.fixture(scope="module")
def three(triton_stream, postgres_url, tmp_path_factory):
    """Three replicas (concurrency 1 each) launched at the same instant on one empty database."""
    with cluster(triton_stream, postgres_url, tmp_path_factory.mktemp("three"), "--concurrency", "1") as running:
        replicas = [running.add(name) for name in ("r0", "r1", "r2")]
        for replica in replicas:
            replica.launch()
        yield running


def test_three_replicas_started_at_once_on_an_empty_database_all_come_up(three):
    for replica in three.replicas.values():
        replica.wait_ready()
    engine = sqlalchemy.create_engine(three.database)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()
    for name, replica in three.replicas.items():
        assert "Traceback" not in replica.log.read_text(), name


def test_a_burst_through_one_replica_is_run_by_all_three(three, image):
    client = three.client("r0")
    burst = [client.predictions.create(version="any", input={"image": image, **SMALL, "num_inference_steps": 12})
             for _ in range(9)]
    for prediction in burst:
        prediction.wait()
        assert prediction.status == "succeeded", prediction.error
    jobs = {job.id: job for job in jobs_in(three.database)}
    assert {jobs[p.id].worker for p in burst} == {"r0", "r1", "r2"}
    assert all(jobs[p.id].attempts == 1 for p in burst)  # each ran once
    assert {jobs[p.id].output_key for p in burst} <= three.outputs()
    video = requests.get(burst[0].output, timeout=30)
    assert decode_video(video.content, "mp4").num_frames == 4


def test_a_cancel_reaches_a_job_running_on_another_replica(three, image):
    job = three.client("r0").predictions.create(version="any", input={"image": image, **LONG})
    runner = until(lambda: three.running_on(job.id), "the job to run")
    other = next(name for name in three.replicas if name != runner)
    three.client(other).predictions.cancel(job.id)
    canceled = until(lambda: (found := three.job(job.id)).status in TERMINAL and found, "the cancel")
    assert canceled.status == "canceled" and canceled.worker == runner
    assert "100/100" not in canceled.logs


def test_metrics_agree_with_the_store(three):
    jobs = jobs_in(three.database)
    by_status = {status: sum(job.status == status for job in jobs) for status in ("queued", "succeeded", "canceled")}
    ran: dict[str, int] = {}
    for name, replica in three.replicas.items():
        metrics = scrape(replica)
        assert metrics[("svd_gateway_jobs", (("status", "running"),))] == 0
        assert ("svd_gateway_jobs", (("status", "succeeded"),)) not in metrics  # finished: the replicas' counters
        assert metrics[("svd_gateway_queue_depth", ())] == by_status["queued"] == 0
        assert metrics[("svd_gateway_oldest_queued_seconds", ())] == 0
        assert metrics[("svd_gateway_running_jobs", (("replica", name),))] == 0
        assert metrics[("svd_gateway_lease_takeovers_total", ())] == 0
        ran[name] = metrics.get(("svd_gateway_job_duration_seconds_count", (("status", "succeeded"),)), 0)
        assert ran[name] == sum(job.worker == name and job.status == "succeeded" for job in jobs)
    created = scrape(three.replicas["r0"])[("svd_gateway_http_requests_total", (("code", "201"), ("route", "/v1/predictions")))]
    assert created == sum(job.origin == "predictions" for job in jobs)


def scrape(replica: GatewayProcess) -> dict[tuple, float]:
    text = requests.get(f"{replica.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_sigkilled_replica_s_jobs_are_taken_over_and_run_once(triton_stream, postgres_url, tmp_path, image):
    with cluster(triton_stream, postgres_url, tmp_path, "--concurrency", "1") as running:
        for name in ("a", "b", "c"):
            running.add(name).launch()
        for replica in running.replicas.values():
            replica.wait_ready()
        client = running.client("a")
        long = [client.predictions.create(version="any", input={"image": image, **SMALL, "num_inference_steps": 30})
                for _ in range(3)]
        queued = [client.predictions.create(version="any", input={"image": image, **QUICK}) for _ in range(3)]
        # Whichever long job streams progress first: its replica is killed mid-job. (Waiting for all three at
        # once would need Triton to batch them, which depends on when each replica's request arrives.)
        computing = until(lambda: next((p.id for p in long if running.running_on(p.id)), None), "a long job computing")
        victim = running.job(computing).worker
        running.replicas[victim].kill()  # never restarted
        watcher = running.client(next(name for name in running.replicas if name != victim))
        for prediction in [*long, *queued]:
            found = watcher.predictions.get(prediction.id)
            found.wait()
            assert found.status == "succeeded", found.error
        jobs = {job.id: job for job in jobs_in(running.database)}
        taken = [job for job in jobs.values() if "stopped renewing its lease" in job.logs]
        assert [job.id for job in taken] == [computing]
        assert taken[0].attempts == 2 and taken[0].worker != victim
        assert running.outputs() == {job.output_key for job in jobs.values()}  # one video per job, none extra
        survivors = [replica for name, replica in running.replicas.items() if name != victim]
        assert sum(scrape(replica)[("svd_gateway_lease_takeovers_total", ())] for replica in survivors) == 1


@pytest.mark.slow
def test_sigterm_drains_hands_over_what_it_cannot_finish_and_exits_0(triton_stream, postgres_url, tmp_path, image):
    # `fits` (5 light steps) is computing at SIGTERM and ends within the drain time (20 s); two long ones (400 steps,
    # of different widths so that Triton runs them one after the other: 30 s together at the least) cannot both. Leases of 10 minutes: a job
    # the other replica runs before that was released, not taken over after its lease expired.
    with cluster(triton_stream, postgres_url, tmp_path, "--lease-seconds", "600") as running:
        leaving = running.add("leaving", "--concurrency", "3", "--drain-seconds", "20").launch()
        staying = running.add("staying", "--concurrency", "1").launch()
        leaving.wait_ready(), staying.wait_ready()
        staying.pause()  # so that `leaving` claims every job
        client = running.client("leaving")
        fits = client.predictions.create(version="any", input={"image": image, **SMALL, "num_inference_steps": 5})
        until(lambda: re.search(r" [1-9]/5 denoising", running.job(fits.id).logs), "`fits` computing")
        long = [client.predictions.create(version="any", input={"image": image, **LONGER, "width": width})
                for width in (64, 72)]
        until(lambda: all(running.job(p.id).worker for p in long), "the long ones claimed by the replica about to leave")
        answer = {}
        synchronous = threading.Thread(target=lambda: answer.update(reply=requests.post(
            f"{leaving.url}/predict", json={"image": image, **QUICK}, headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=WAIT)))
        synchronous.start()  # in flight, waiting for a slot
        until(lambda: any(job.origin == "tir" for job in jobs_in(running.database)), "the synchronous job")
        staying.resume()
        assert leaving.terminate(seconds=WAIT) == 0
        synchronous.join(timeout=WAIT)
        reply = answer["reply"]
        assert reply.status_code in (200, 503), reply.text  # answered, or refused cleanly
        if reply.status_code == 503:
            assert reply.json()["error"]["code"] == "unavailable"
        finished = running.job(fits.id)
        assert finished.status == "succeeded" and finished.worker == "leaving"  # it fit in the drain time
        until(lambda: any(running.running_on(p.id) == "staying" for p in long), "the other replica running one")
        for prediction in long:
            job = running.job(prediction.id)
            if prediction is long[1] or job.status != "succeeded":  # the second cannot have fit
                assert job.status in ("queued", "running") and job.attempts <= 1  # released: no attempt burned
                assert "shut down before the job could finish; the job is queued again" in job.logs
                assert "stopped renewing" not in job.logs  # not a takeover after the lease
        for prediction in long:
            running.client("staying").predictions.cancel(prediction.id)


def test_a_paused_replica_s_late_finish_is_refused(triton_stream, postgres_url, tmp_path, image):
    receiver = Receiver()
    try:
        with cluster(triton_stream, postgres_url, tmp_path, "--concurrency", "1") as running:
            for name in ("a", "b"):
                running.add(name).launch()
            for replica in running.replicas.values():
                replica.wait_ready()
            job = running.client("a").predictions.create(
                version="any", input={"image": image, **SMALL, "num_inference_steps": 60},
                webhook=f"{receiver.url}/hook", webhook_events_filter=["completed"])
            first = until(lambda: running.running_on(job.id), "the job to run")
            paused = running.replicas[first]
            paused.pause()  # partitioned: its lease runs out while it cannot renew it
            try:
                until(lambda: running.job(job.id).attempts == 2, "another replica taking the job over")
            finally:
                paused.resume()
            done = until(lambda: (found := running.job(job.id)).status in TERMINAL and found, "the job to finish")
            until(lambda: "lease lost" in paused.log.read_text(), "the resumed replica to find its lease lost")
            assert done.status == "succeeded" and done.worker != first
            assert running.outputs() == {done.output_key}
            completed = receiver.wait_for("/hook", 1)  # the resumed replica has given up already (its log says so)
            assert [body["status"] for _, body in completed] == ["succeeded"]
            assert replicate.Client(api_token=TOKEN, base_url=paused.url).predictions.get(job.id).status == "succeeded"
    finally:
        receiver.server.shutdown()


def test_a_database_made_by_the_old_gateway_is_migrated_in_place(triton_stream, postgres_url, tmp_path, sample_png):
    database = new_database(postgres_url)
    engine = sqlalchemy.create_engine(database)
    create_old_schema(engine)
    data = tmp_path / "data"
    (data / "inputs").mkdir(parents=True)
    (data / "inputs" / "oldjob").write_bytes(sample_png)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(
            "INSERT INTO predictions (id, origin, model, version, status, input, params, image_sha256, base_url, logs, "
            "output_removed, webhook_events, attempts, cancel_requested, created_at) VALUES ('oldjob', 'predictions', "
            "'m', 'v', 'starting', '{}', :params, '', 'http://x', 'queued before the upgrade\n', false, '[]', 0, "
            "false, :now)"), {"params": '{"num_frames": 4, "width": 64, "height": 64, "num_inference_steps": 2}',
                              "now": utcnow()})
    migrate = subprocess.run(
        [sys.executable, "-m", "svd_triton", "gateway", "migrate", "--database-url", database,
         "--data-dir", str(data)], capture_output=True, text=True, timeout=WAIT)
    assert migrate.returncode == 0, migrate.stderr
    assert "schema revision 0006" in migrate.stdout
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()
    with Gateway(settings_for(triton_stream, data, database_url=database)):
        done = until(lambda: (job := next(j for j in jobs_in(database) if j.id == "oldjob")).status in TERMINAL and job,
                     "the old queued job to run")
    assert done.status == "succeeded" and done.logs.startswith("queued before the upgrade\n")


class RenewingWhileAJobStarts(Store):
    """The store, with its first lease renewal held open until a job claimed after it has started generating:
    the interleaving a busy replica meets when a claim lands while its heartbeat's renewal is in flight."""

    def __init__(self, *args):
        super().__init__(*args)
        self.renewing, self.job_started = threading.Event(), threading.Event()

    def renew(self, holder: str, lease: float, ids) -> dict[str, bool]:
        held = super().renew(holder, lease, ids)
        if not self.renewing.is_set():
            self.renewing.set()
            assert self.job_started.wait(60), "no job started while the renewal was held"
        return held


def test_a_job_claimed_while_the_heartbeat_renews_leases_runs_to_the_end(triton_stream, tmp_path, sample_png):
    """The renewal's answer lacks a job claimed after it began; that is no sign of a takeover (it was taken for
    one, and the job was canceled the moment it started)."""
    settings = Settings(triton_url=triton_stream.grpc_url, token=TOKEN, data_dir=tmp_path, concurrency=1,
                        lease_seconds=30, heartbeat_seconds=0.2, poll_seconds=0.2)

    async def scenario() -> Job:
        store = RenewingWhileAJobStarts(settings.database, FolderBlobs(tmp_path))
        svd = AsyncSVDClient(settings.triton_url, protocol="grpc", token=TOKEN, timeout=120)
        metrics = GatewayMetrics("r0")
        webhooks = Webhooks(store, configured=None, data_dir=tmp_path, allow=AllowList(()), attempts=1, backoff=0.1,
                            timeout=5, outcomes=metrics.webhooks)
        runner = JobRunner(store, svd, webhooks, settings, metrics)
        await runner.start()
        try:
            await asyncio.to_thread(store.renewing.wait, 60)
            job = runner.new_job("predictions", sample_png, {**SMALL, "num_inference_steps": 20}, {}, "http://test",
                                 owner=BOOTSTRAP_OWNER, api_key=BOOTSTRAP_KEY)
            await runner.submit(job, sample_png)
            while job.id not in runner.generations:
                await asyncio.sleep(0.01)
            store.job_started.set()
            return await runner.wait(job.id, 120)
        finally:
            await runner.stop()
            await webhooks.close()
            await svd.close()
            store.close()

    finished = asyncio.run(scenario())
    assert finished.status == "succeeded", (finished.status, finished.logs)
    assert finished.attempts == 1


@pytest.mark.parametrize("scenario", [store_queue.test_a_job_lost_with_the_model_runs_with_nothing_else_running_on_any_replica,
                                      store_queue.test_a_reserved_job_lost_with_the_model_waits_for_the_others_then_runs_first,
                                      store_queue.test_jobs_that_run_alone_take_turns_and_the_rule_holds_inside_the_claim_itself,
                                      store_queue.test_a_lease_this_process_no_longer_tracks_is_not_renewed_and_is_taken_over,
                                      store_queue.test_queued_jobs_are_told_once_that_they_wait_for_the_model],
                         ids=["runs alone", "reserved runs alone", "alone in turn", "untracked lease", "waiting for the model"])
def test_the_store_s_fault_handling_on_postgresql_too(postgres_url, tmp_path, scenario):
    """The SQLite scenarios of tests/unit/test_store_queue.py, on PostgreSQL (its claim lock, its SQL)."""
    store = Store(new_database(postgres_url), FolderBlobs(tmp_path))
    try:
        scenario(store)
    finally:
        store.close()
