"""The job store as a work queue, on SQLite (the same code runs on PostgreSQL in
tests/integration/test_gateway_queue.py): oldest-first claims, leases, takeover after expiry, the fence that
refuses a former holder's writes, release without burning an attempt, a job that runs alone across replicas, and the
schema's migrations."""
from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from svd_gateway.accounts import BOOTSTRAP_OWNER
from svd_gateway.blobs import FolderBlobs
from svd_gateway.store import Base, Deferred, Job, LeaseLost, Store, migrate, new_id, utcnow
from tests.support.old_store import create_old_schema

LEASE = 30.0


def queued(store: Store, origin: str = "predictions", holder: str | None = None, age: float = 0.0) -> Job:
    job = Job(id=new_id(), origin=origin, model="m", version="v", status="queued", input={}, params={},
              image_sha256="0" * 64, base_url="http://x", logs="", webhook_events=[], attempts=0,
              cancel_requested=False, output_removed=False, created_at=utcnow() - timedelta(seconds=age),
              lease_holder=holder, lease_expires_at=utcnow() + timedelta(seconds=LEASE) if holder else None,
              polled=holder is None)  # a synchronous route's job is created held, for its client on the line
    return store.create(job, b"image")


def expire_leases(store: Store) -> None:
    with store.session.begin() as session:
        session.execute(sqlalchemy.update(Job).where(Job.lease_holder.is_not(None))
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1)))


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}", FolderBlobs(tmp_path))
    yield store
    store.close()


def test_claims_take_the_oldest_queued_job_once_and_skip_reserved_ones(store):
    newer, older = queued(store, age=1), queued(store, age=5)
    queued(store, origin="tir", holder="other-process", age=10)  # a synchronous route's job: its holder runs it
    first = store.claim_next("a", "replica-a", LEASE)
    second = store.claim_next("b", "replica-b", LEASE)
    assert (first.id, second.id) == (older.id, newer.id)
    assert store.claim_next("c", "replica-c", LEASE) is None
    assert first.status == "running" and first.attempts == 1 and first.lease_holder == "a"
    assert store.renew("a", LEASE, [older.id]) == {older.id: False}


def test_an_expired_lease_is_taken_over_and_the_former_holder_is_fenced_out(store):
    job = queued(store)
    stale = store.claim_next("a", "replica-a", LEASE)
    expire_leases(store)
    assert store.reclaim_expired(max_attempts=3) == (1, [])
    assert store.get(job.id).status == "queued" and "queued again (attempt 2)" in store.get(job.id).logs
    current = store.claim_next("b", "replica-b", LEASE)
    assert current.attempts == 2
    with pytest.raises(LeaseLost):
        store.append_logs(stale, "late progress\n")
    assert store.finish(stale, "succeeded", output_key="late") is None  # refused: not the holder any more
    assert store.release(stale, "late release") is False
    assert store.renew("a", LEASE, [job.id]) == {}  # the former holder learns it lost the job
    done = store.finish(current, "succeeded", output_key="kept")
    assert done.status == "succeeded" and done.output_key == "kept" and done.lease_holder is None
    assert store.finish(current, "failed") is None  # once


def test_after_max_attempts_an_expired_job_fails_with_the_reason(store):
    job = queued(store)
    for attempt in (1, 2):
        assert store.claim_next("a", "replica-a", LEASE).attempts == attempt
        expire_leases(store)
        taken, ended = store.reclaim_expired(max_attempts=2)
        assert taken == 1
    [failed] = ended
    assert failed.id == job.id and failed.status == "failed" and failed.error_code == "interrupted"
    assert "lost 2 times" in failed.error


def test_a_synchronous_job_whose_holder_is_lost_fails_and_a_canceled_one_ends_canceled(store):
    waiting = queued(store, origin="tir", holder="lost-process")
    canceled = queued(store)
    store.claim_next("a", "replica-a", LEASE)
    store.request_cancel(canceled.id)
    expire_leases(store)
    taken, ended = store.reclaim_expired(max_attempts=5)
    assert taken == 2
    assert {job.id: job.status for job in ended} == {waiting.id: "failed", canceled.id: "canceled"}
    assert "client was waiting" in store.get(waiting.id).error


def test_a_released_job_keeps_its_attempt_and_is_claimed_again(store):
    job = queued(store)
    held = store.claim_next("a", "replica-a", LEASE)
    assert store.release(held, "replica a is shutting down") is True
    again = store.claim_next("b", "replica-b", LEASE)
    assert again.id == job.id and again.attempts == 1 and "shutting down" in again.logs


def test_a_job_lost_with_the_model_runs_with_nothing_else_running_on_any_replica(store):
    """Holders a, b and c are three replicas: the suspect waits for the job running on a, no replica claims
    anything else meanwhile (a reserved job is deferred too), and only once it has ended do the others start."""
    neighbour, suspect, later = queued(store, age=3), queued(store, age=2), queued(store, age=1)
    reserved = queued(store, origin="tir", holder="c")
    running = store.claim_next("a", "replica-a", LEASE)
    lost = store.claim_next("b", "replica-b", LEASE)
    assert (running.id, lost.id) == (neighbour.id, suspect.id)
    assert store.requeue(lost, "lost", "Stub process 'svd_xt_0_0' is not healthy.", 0.0, alone=True).alone
    assert store.claim_next("b", "replica-b", LEASE) is None  # the suspect waits for the neighbour to end
    with pytest.raises(Deferred):
        store.claim(reserved.id, "c", "replica-c", LEASE)
    store.finish(running, "succeeded")
    assert store.claim_next("c", "replica-c", LEASE).id == suspect.id  # before the older reserved and later ones
    assert store.claim_next("a", "replica-a", LEASE) is None  # it runs alone
    with pytest.raises(Deferred):
        store.claim(reserved.id, "c", "replica-c", LEASE)
    store.finish(store.get(suspect.id), "succeeded")
    assert store.claim(reserved.id, "c", "replica-c", LEASE).id == reserved.id
    assert store.claim_next("a", "replica-a", LEASE).id == later.id


def test_a_reserved_job_lost_with_the_model_waits_for_the_others_then_runs_first(store):
    reserved = queued(store, origin="tir", holder="c")
    other = store.claim_next("a", "replica-a", LEASE)
    assert other is None  # only the reserved job exists: nothing for the shared queue
    waiting = queued(store)
    running = store.claim(reserved.id, "c", "replica-c", LEASE)
    requeued = store.requeue(running, "lost", "Stub process 'svd_xt_0_0' is not healthy.", 0.0, alone=True)
    assert requeued.lease_holder == "c" and requeued.alone
    assert store.claim_next("a", "replica-a", LEASE) is None  # due and reserved: the shared queue waits for it
    assert store.claim(reserved.id, "c", "replica-c", LEASE).attempts == 2
    assert store.claim_next("a", "replica-a", LEASE) is None
    store.finish(store.get(reserved.id), "succeeded")
    assert store.claim_next("a", "replica-a", LEASE).id == waiting.id


def test_jobs_that_run_alone_take_turns_and_the_rule_holds_inside_the_claim_itself(store):
    """Two suspects run one after the other; a claim that read the queue before a suspect was requeued (another
    process, on SQLite with no shared claim lock) is still refused by its UPDATE; a canceled reserved job is
    None, not deferred."""
    first, second, bystander = queued(store, age=3), queued(store, age=2), queued(store, age=1)
    reserved = queued(store, origin="tir", holder="c")
    for job in (first, second):
        store.requeue(store.claim_next("a", "replica-a", LEASE), "lost", "Stub process died", 0.0, alone=True)
    with store.session.begin() as session:  # the stale reader's take of the bystander
        assert store._take(session, bystander.id, None, "b", "replica-b", LEASE) is None
    running = store.claim_next("b", "replica-b", LEASE)
    assert running.id == first.id and store.claim_next("b", "replica-b", LEASE) is None
    store.request_cancel(reserved.id)
    assert store.claim(reserved.id, "c", "replica-c", LEASE) is None  # canceled, while the queue is held
    store.finish(running, "succeeded")
    assert store.claim_next("b", "replica-b", LEASE).id == second.id


def test_a_lease_this_process_no_longer_tracks_is_not_renewed_and_is_taken_over(store):
    tracked, lost_track = queued(store, age=2), queued(store, age=1)
    store.claim_next("a", "replica-a", LEASE), store.claim_next("a", "replica-a", LEASE)
    expire_leases(store)
    assert store.renew("a", LEASE, [tracked.id]) == {tracked.id: False, lost_track.id: False}
    assert store.reclaim_expired(max_attempts=3) == (1, [])
    assert store.get(lost_track.id).status == "queued" and store.get(tracked.id).status == "running"


def test_queued_jobs_are_told_once_that_they_wait_for_the_model(store):
    line = "waiting for the model: 100% down_\n"  # LIKE's wildcards in it are taken as they are
    waiting, running = queued(store), queued(store, age=1)
    store.claim_next("a", "replica-a", LEASE)
    for _ in range(3):  # every replica that sees the outage, every few seconds
        store.note_waiting(line)
    assert store.get(waiting.id).logs == line and store.get(running.id).logs == ""


def test_a_fresh_database_is_created_by_the_migrations_exactly_as_the_models_say(tmp_path):
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert migrate(engine) == migrate(engine)  # the second run finds nothing to do
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_a_database_made_before_migrations_is_upgraded_in_place_with_its_jobs(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sqlalchemy.create_engine(url)
    create_old_schema(engine)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(
            "INSERT INTO predictions (id, origin, model, version, status, input, params, image_sha256, base_url, logs, "
            "output_removed, webhook_events, attempts, cancel_requested, created_at) VALUES ('old1', 'predictions', "
            "'m', 'v', 'starting', '{}', '{}', '', 'http://x', 'queued before the upgrade\n', 0, '[]', 0, 0, "
            "'2026-01-01 00:00:00')"))
    store = Store(url, FolderBlobs(tmp_path))
    assert store.get("old1").logs == "queued before the upgrade\n"
    assert store.find("old1", BOOTSTRAP_OWNER) is not None  # what existed before accounts is the bootstrap owner's
    assert store.claim_next("a", "replica-a", LEASE).id == "old1"
    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    store.close()


def test_a_missing_database_driver_is_one_line_naming_the_extra(tmp_path):
    code = ("import sys; sys.modules['psycopg'] = None; from svd_triton.cli import main; "
            f"sys.exit(main(['gateway', 'migrate', '--data-dir', {str(tmp_path)!r}, "
            "'--database-url', 'postgresql+psycopg://user@localhost/db']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "svd-triton[postgres]" in done.stderr and "Traceback" not in done.stderr
