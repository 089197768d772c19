"""The store's side of accounts, on SQLite (the same code runs on PostgreSQL in tests/integration/test_accounts.py):
a key's creation rate and cap on active jobs, checked as each job is stored; claims fair across owners; retention
per owner; lookups that never find another owner's things."""
from __future__ import annotations

from datetime import timedelta

import pytest

from svd_gateway.accounts import QuotaExceeded, key_digest, new_key
from svd_gateway.blobs import FolderBlobs
from svd_gateway.store import ApiKey, Job, Store, new_id, utcnow

LEASE = 30.0


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}", FolderBlobs(tmp_path))
    yield store
    store.close()


def make_key(store: Store, name: str, owner: str, **limits) -> str:
    key = new_key()
    store.add_key(ApiKey(name=name, digest=key_digest(key), prefix=key[:12], owner=owner, scopes=["generate"],
                         created_at=utcnow(), **limits))
    return key


def queued(store: Store, owner: str, key: str | None = None, age: float = 0.0) -> Job:
    job = Job(id=new_id(), origin="predictions", model="m", version="v", status="queued", input={}, params={},
              image_sha256="0" * 64, base_url="http://x", logs="", webhook_events=[], attempts=0,
              cancel_requested=False, output_removed=False, created_at=utcnow() - timedelta(seconds=age),
              polled=True, owner=owner, api_key=key or owner)
    return store.create(job, b"image")


def finished_with_output(store: Store, owner: str, age: float) -> Job:
    job = queued(store, owner, age=age)
    with store.session.begin() as session:
        row = session.get(Job, job.id)
        key = store.save_output(b"video")
        row.status, row.output_key, row.output_format, row.output_bytes = "succeeded", key, "mp4", 5
        row.completed_at = utcnow() - timedelta(seconds=age)
    return job


def test_keys_are_found_by_digest_until_revoked_or_expired(store):
    live = make_key(store, "live", "a")
    expired = make_key(store, "old", "a", expires_at=utcnow() - timedelta(seconds=1))
    assert store.find_key(key_digest(live)).owner == "a"
    assert store.find_key(key_digest(expired)) is None
    assert store.revoke_key("live") and not store.revoke_key("live")
    assert store.find_key(key_digest(live)) is None
    with pytest.raises(ValueError, match="exists already"):
        make_key(store, "live", "b")  # a revoked key keeps its name, for the audit trail


def test_a_key_s_rate_refuses_the_creation_past_it_with_when_to_retry(store, tmp_path):
    make_key(store, "k", "a", rate_per_minute=2)
    queued(store, "a", "k"), queued(store, "a", "k")
    with pytest.raises(QuotaExceeded, match="2 jobs per minute") as refused:
        queued(store, "a", "k")
    assert 1 <= refused.value.retry_after <= 30  # one token comes back every 30 s
    assert len(list((tmp_path / "inputs").iterdir())) == 2  # the refused job's image is not kept
    queued(store, "a", "other")  # another key (no row: unlimited) is not held back by it


def test_a_key_s_cap_on_active_jobs_counts_queued_and_running_and_frees_when_one_ends(store):
    make_key(store, "k", "a", max_active=2)
    first, _ = queued(store, "a", "k"), queued(store, "a", "k")
    store.claim_next("holder", "r", LEASE)
    with pytest.raises(QuotaExceeded, match="max_active 2"):
        queued(store, "a", "k")
    store.finish(store.get(first.id), "succeeded")
    queued(store, "a", "k")


def test_claims_go_to_the_owner_with_fewest_running_before_a_burst_s_older_jobs(store):
    burst = [queued(store, "a", age=100 - i) for i in range(5)]
    assert store.claim_next("h1", "r1", LEASE).id == burst[0].id
    single = queued(store, "b")
    assert store.claim_next("h2", "r2", LEASE).id == single.id  # b has none running, a has one
    assert store.claim_next("h3", "r3", LEASE).id == burst[1].id
    assert store.queue_position(store.get(burst[4].id)) == 2  # a's own older ones; b has none waiting


def test_queue_position_counts_the_turns_other_owners_take_first(store):
    mine = [queued(store, "a", age=50 - i) for i in range(3)]
    for i in range(10):
        queued(store, "b", age=100 - i)  # older than a's: b goes first in each turn
    assert [store.queue_position(job) for job in mine] == [1, 3, 5]


def test_retention_keeps_each_owner_s_newest_so_a_busy_owner_never_evicts_another(store):
    quiet = finished_with_output(store, "quiet", age=500)
    busy = [finished_with_output(store, "busy", age=100 - i) for i in range(4)]
    assert store.expire(max_outputs=2, output_seconds=3600, max_output_bytes=10**9) == 2
    kept = {job.id for job in (quiet, *busy) if not store.get(job.id).output_removed}
    assert kept == {quiet.id, busy[2].id, busy[3].id}
    assert store.expire(max_outputs=10, output_seconds=3600, max_output_bytes=5) == 1  # busy's older 5 bytes
    assert not store.get(quiet.id).output_removed and not store.get(busy[3].id).output_removed


def test_lookups_never_find_another_owner_s_jobs_or_files(store):
    job = queued(store, "a")
    upload = store.add_upload("a", "x.png", "image/png", b"png", "0" * 64, 3, 3600)
    assert store.find(job.id, "a") is not None and store.find(job.id, "b") is None
    assert store.page("predictions", "b", None, 10) == [] and len(store.page("predictions", "a", None, 10)) == 1
    assert store.get_upload(upload.id, "b") is None and store.list_uploads("b") == []
    assert not store.delete_upload(upload.id, "b") and store.get_upload(upload.id, "a") is not None
