"""Accounts on two gateway replicas (processes, concurrency 1 each) sharing one real PostgreSQL and one real
tritonserver (tiny model, streaming): keys made by `svd-triton gateway keys create`, each owner seeing only its own
work through every family's own client (the `openai` SDK, the `replicate` client, `requests` as TIR's, Forge's,
Stability's, fal's and Replicate's file samples use it), rate and active-job limits answered 429 with Retry-After
by either replica, a fair share of the queue, scopes, revocation, signed output links and per-owner webhook
secrets. Every wait is for a condition, with a timeout that only bounds a hung run."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import warnings

import openai
import pytest
import replicate
import requests
import sqlalchemy
from replicate.exceptions import ReplicateError
from replicate.webhook import WebhookSigningSecret, Webhooks

from tests.support import TOKEN
from tests.support.cluster import cluster, jobs_in
from tests.support.videos import decode_video
from tests.support.waiting import until
from tests.support.webhooks import Receiver
from svd_gateway.jobs import output_signature
from svd_gateway.store import TERMINAL

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK marks client.videos deprecated
SMALL = {"num_frames": 4, "width": 64, "height": 64, "num_inference_steps": 2}
LONG = {**SMALL, "num_inference_steps": 100}
SLUG = "stabilityai-stable-video-diffusion"


def make_key(database: str, name: str, *flags: str) -> tuple[str, str]:
    """(the key, what the command printed) from `svd-triton gateway keys create`."""
    made = subprocess.run([sys.executable, "-m", "svd_triton", "gateway", "keys", "create", name,
                           "--database-url", database, *flags], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    return made.stdout.splitlines()[-1], made.stdout


def keys_command(database: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "svd_triton", "gateway", "keys", *args, "--database-url", database],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def two(triton_stream, postgres_url, tmp_path_factory):
    with cluster(triton_stream, postgres_url, tmp_path_factory.mktemp("accounts"), "--concurrency", "1") as running:
        for name in ("r0", "r1"):
            running.add(name).launch()
        for replica in running.replicas.values():
            replica.wait_ready()
        yield running


@pytest.fixture(scope="module")
def keys(two) -> dict[str, str]:
    made = {name: make_key(two.database, name, *flags)[0] for name, flags in {
        "alice": (), "bob": (), "ops": ("--admin-only",), "slow": ("--rate", "2/min"), "one": ("--max-active", "1"),
        "leaving": (),
    }.items()}
    return made


@pytest.fixture(scope="module")
def image(sample_png) -> str:
    return base64.b64encode(sample_png).decode()


def url(two, replica: str, path: str) -> str:
    return f"{two.replicas[replica].url}{path}"


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def replicate_for(two, replica: str, key: str) -> replicate.Client:
    client = replicate.Client(api_token=key, base_url=two.replicas[replica].url)
    client.poll_interval = 0.1
    return client


def openai_for(two, replica: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url(two, replica, "/v1"), api_key=key, max_retries=0)


def test_the_cli_prints_the_key_alone_on_its_last_line_and_the_database_keeps_no_key(two, keys):
    key, printed = make_key(two.database, "printed", "--owner", "alice", "--max-active", "3", "--rate", "60/min")
    assert key.startswith("svdk_") and len(key) > 40 and printed.count(key) == 1
    assert "owner alice" in printed and "max-active 3" in printed
    listing = keys_command(two.database, "list")
    assert listing.returncode == 0 and "printed\talice\tgenerate\tmax-active 3, rate 60/min" in listing.stdout
    engine = sqlalchemy.create_engine(two.database)
    with engine.connect() as connection:
        dumped = "\n".join(str(row) for table in ("api_keys", "owners", "predictions", "files")
                           for row in connection.execute(sqlalchemy.text(f"SELECT * FROM {table}")))
    engine.dispose()
    for plaintext in (key, *keys.values()):
        assert plaintext not in dumped and plaintext[5:] not in dumped


def test_another_owner_s_work_is_not_found_in_any_family_and_lists_show_only_one_s_own(two, keys, image, sample_png):
    alice, bob = keys["alice"], keys["bob"]
    # Alice's things, one in each family that keeps any, through its own client.
    prediction = replicate_for(two, "r0", alice).predictions.create(version="any", input={"image": image, **SMALL})
    video = openai_for(two, "r0", alice).videos.create(prompt="a kite", input_reference=("a.png", sample_png, "image/png"),
                                                       size="64x64", extra_body={"num_frames": 4,
                                                                                "num_inference_steps": 2})
    stability = requests.post(url(two, "r0", "/v2beta/image-to-video"), headers=as_key(alice), timeout=30,
                              files={"image": ("a.png", sample_png, "image/png")},
                              data={"num_frames": 4, "width": 64, "height": 64, "num_inference_steps": 2}).json()["id"]
    fal = requests.post(url(two, "r0", "/fal-ai/fast-svd"), headers={"Authorization": f"Key {alice}"}, timeout=30,
                        json={"image_url": f"data:image/png;base64,{image}", **SMALL}).json()["request_id"]
    upload = requests.post(url(two, "r0", "/v1/files"), headers=as_key(alice), timeout=30,
                           files={"content": ("a.png", sample_png, "image/png")}).json()
    replicate_for(two, "r0", alice).predictions.get(prediction.id).wait()
    until(lambda: openai_for(two, "r0", alice).videos.retrieve(video.id).status == "completed", "alice's video")

    # Bob, on the other replica: each of Alice's ids is unknown to him, in each family's own shape.
    bobs = replicate_for(two, "r1", bob)
    for call in (lambda: bobs.predictions.get(prediction.id), lambda: bobs.predictions.cancel(prediction.id)):
        with pytest.raises(ReplicateError) as missing:
            call()
        assert missing.value.status == 404
    assert prediction.id not in [p.id for p in bobs.predictions.list().results]
    bobs_openai = openai_for(two, "r1", bob)
    alices_file = openai_for(two, "r0", alice).videos.download_content(video.id).content
    for call in (lambda: bobs_openai.videos.retrieve(video.id), lambda: bobs_openai.videos.delete(video.id),
                 lambda: bobs_openai.videos.download_content(video.id),
                 lambda: bobs_openai.videos.download_content(video.id, variant="thumbnail"),
                 lambda: bobs_openai.videos.remix(video.id, prompt="mine now"),
                 lambda: bobs_openai.videos.extend(video=alices_file, prompt="more", seconds="4"),  # its bytes
                 lambda: bobs_openai.videos.list(after=video.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert video.id not in [v.id for v in bobs_openai.videos.list()]
    missing = requests.get(url(two, "r1", f"/v2beta/image-to-video/result/{stability}"), headers=as_key(bob),
                           timeout=30)
    assert missing.status_code == 404 and missing.json()["name"] == "not_found"
    for method, path in (("GET", f"/fal-ai/fast-svd/requests/{fal}/status"), ("GET", f"/fal-ai/fast-svd/requests/{fal}"),
                         ("PUT", f"/fal-ai/fast-svd/requests/{fal}/cancel")):
        answer = requests.request(method, url(two, "r1", path), headers={"Authorization": f"Key {bob}"}, timeout=30)
        assert answer.status_code == 404 and "detail" in answer.json(), path
    for method in ("GET", "DELETE"):
        answer = requests.request(method, url(two, "r1", f"/v1/files/{upload['id']}"), headers=as_key(bob), timeout=30)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    assert requests.get(url(two, "r1", "/v1/files"), headers=as_key(bob), timeout=30).json()["results"] == []
    # Alice's upload is no input of Bob's either, in TIR's, Forge's and Replicate's bodies.
    borrowed = upload["urls"]["get"]
    for path, body in (("/predict", {"image": borrowed, **SMALL}), (f"/v1/inference/{SLUG}", {"image": borrowed, **SMALL})):
        refused = requests.post(url(two, "r1", path), json=body, headers=as_key(bob), timeout=60)
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "image", path
    with pytest.raises(ReplicateError) as refused_input:
        bobs.predictions.create(version="any", input={"image": borrowed, **SMALL})
    assert refused_input.value.status == 422

    # Alice still has all of it, through either replica; Bob's own synchronous job is his.
    assert replicate_for(two, "r1", alice).predictions.get(prediction.id).status == "succeeded"
    assert [f["id"] for f in requests.get(url(two, "r1", "/v1/files"), headers=as_key(alice), timeout=30)
            .json()["results"]] == [upload["id"]]
    tir = requests.post(url(two, "r1", "/predict"), json={"image": image, **SMALL}, headers=as_key(bob), timeout=120)
    assert tir.status_code == 200
    owners = {(job.origin, job.owner, job.api_key) for job in jobs_in(two.database)}
    assert ("tir", "bob", "bob") in owners and ("predictions", "alice", "alice") in owners


def test_output_links_are_signed_expire_and_name_no_secret(two, keys, image):
    alice = replicate_for(two, "r0", keys["alice"])
    prediction = alice.predictions.create(version="any", input={"image": image, **SMALL})
    prediction.wait()
    link = prediction.output
    assert prediction.status == "succeeded" and link.endswith(".mp4")
    fetched = requests.get(link, timeout=30)  # no key: the link is the credential, for as long as it lasts
    assert fetched.status_code == 200 and decode_video(fetched.content, "mp4").num_frames == 4
    job = next(job for job in jobs_in(two.database) if job.id == prediction.id)
    assert job.output_key not in link
    expires = int(link.rsplit("/", 1)[1].split("_")[1])
    assert time.time() + 3500 < expires <= time.time() + 3660  # an hour (rounded up to the minute)
    base = link.rsplit("/", 1)[0]
    for forged in (f"{base}/{job.id}.mp4",  # unsigned
                   f"{base}/{job.id}_{expires + 3600}_{output_signature(job, expires)}.mp4",  # extended
                   link.replace(job.id, prediction.id[::-1])):  # another job's name
        answer = requests.get(forged, timeout=30)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", forged
    past = int(time.time()) - 60
    expired = requests.get(f"{base}/{job.id}_{past}_{output_signature(job, past)}.mp4", timeout=30)
    assert expired.status_code == 403 and "expired" in expired.json()["error"]["message"]
    log = two.replicas["r0"].log.read_text()  # its access log names the link it served, without the signature
    assert f"/v1/outputs/{job.id}_{expires}_….mp4 HTTP/1.1\" 200" in log and output_signature(job, expires) not in log


def test_each_owner_s_webhooks_are_signed_with_its_own_secret(two, keys, image):
    receiver = Receiver()
    try:
        secrets = {}
        for name in ("alice", "bob"):
            client = replicate_for(two, "r0", keys[name])
            secrets[name] = client.webhooks.default.secret().key
            client.predictions.create(version="any", input={"image": image, **SMALL}, webhook=f"{receiver.url}/{name}",
                                      webhook_events_filter=["completed"])
        assert secrets["alice"] != secrets["bob"]
        assert replicate_for(two, "r1", keys["alice"]).webhooks.default.secret().key == secrets["alice"]
        for name, other in (("alice", "bob"), ("bob", "alice")):
            [(headers, body)] = receiver.wait_for(f"/{name}", 1)
            Webhooks.validate(headers=headers, body=json.dumps(body),
                              secret=WebhookSigningSecret(key=secrets[name]), tolerance=300)
            with pytest.raises(Exception, match="invalid"):
                Webhooks.validate(headers=headers, body=json.dumps(body),
                                  secret=WebhookSigningSecret(key=secrets[other]), tolerance=300)
    finally:
        receiver.server.shutdown()


def test_a_key_s_rate_is_shared_by_the_replicas_and_refused_with_retry_after_in_each_client(two, keys, image):
    key = keys["slow"]  # 2 per minute
    replicate_for(two, "r0", key).predictions.create(version="any", input={"image": image, **SMALL})
    openai_for(two, "r1", key).videos.create(prompt="a kite", size="64x64", extra_body={"num_frames": 4,
                                                                                        "num_inference_steps": 2})
    with pytest.raises(openai.RateLimitError) as limited:
        openai_for(two, "r0", key).videos.create(prompt="again", size="64x64", extra_body={"num_frames": 4})
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 30
    with pytest.raises(ReplicateError) as refused:
        replicate_for(two, "r1", key).predictions.create(version="any", input={"image": image, **SMALL})
    assert refused.value.status == 429 and "per minute" in refused.value.detail
    stability = requests.post(url(two, "r1", "/v2beta/image-to-video"), headers=as_key(key), timeout=30,
                              files={"image": ("a.png", base64.b64decode(image), "image/png")})
    assert stability.status_code == 429 and stability.json()["name"] == "rate_limit_exceeded"
    assert int(stability.headers["Retry-After"]) >= 1


def test_a_key_s_cap_on_active_jobs_holds_across_replicas_and_frees_when_one_ends(two, keys, image):
    key = keys["one"]  # one queued or running at a time
    first = replicate_for(two, "r0", key).predictions.create(version="any", input={"image": image, **LONG})
    refused = requests.post(url(two, "r1", "/v1/predictions"), headers=as_key(key), timeout=30,
                            json={"version": "any", "input": {"image": image, **SMALL}})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "5"
    assert "max_active 1" in refused.json()["detail"]
    tir = requests.post(url(two, "r1", "/predict"), json={"image": image, **SMALL}, headers=as_key(key), timeout=30)
    assert tir.status_code == 429  # a synchronous request is an active job too
    replicate_for(two, "r1", key).predictions.cancel(first.id)
    until(lambda: replicate_for(two, "r0", key).predictions.get(first.id).status in TERMINAL, "the cancel")
    again = replicate_for(two, "r1", key).predictions.create(version="any", input={"image": image, **SMALL})
    again.wait()
    assert again.status == "succeeded"


def test_one_owner_s_burst_puts_another_s_job_behind_at_most_one_running_job_per_replica(two, keys, image):
    alice, bob = replicate_for(two, "r0", keys["alice"]), replicate_for(two, "r1", keys["bob"])
    burst = [alice.predictions.create(version="any", input={"image": image, **SMALL, "num_inference_steps": 8})
             for _ in range(20)]
    until(lambda: sum(job.status == "running" for job in jobs_in(two.database)) == 2, "both replicas busy")
    single = bob.predictions.create(version="any", input={"image": image, **SMALL})
    single.wait()
    for prediction in burst:
        alice.predictions.cancel(prediction.id)
    jobs = {job.id: job for job in jobs_in(two.database)}
    mine = jobs[single.id]
    assert mine.status == "succeeded"
    overtook = [jobs[p.id] for p in burst if jobs[p.id].started_at and mine.created_at < jobs[p.id].started_at
                < mine.started_at]
    assert len(overtook) <= len(two.replicas), [job.id for job in overtook]  # oldest-first would be 18
    assert sum(jobs[p.id].status == "canceled" for p in burst) >= 10  # most of the burst was still waiting


def test_scopes_keep_clients_from_operating_and_operators_from_generating(two, keys, image):
    for path in (f"/v1/model-families/{SLUG}/start", f"/v1/model-families/{SLUG}/stop"):
        refused = requests.post(url(two, "r0", path), headers=as_key(keys["alice"]), json={}, timeout=30)
        assert refused.status_code == 403 and "admin scope" in refused.json()["error"]["message"]
    assert requests.get(url(two, "r0", "/metrics"), headers=as_key(keys["alice"]), timeout=30).status_code == 403
    assert requests.get(url(two, "r0", "/metrics"), timeout=30).status_code == 401
    scraped = requests.get(url(two, "r1", "/metrics"), headers=as_key(keys["ops"]), timeout=30)
    assert scraped.status_code == 200 and "svd_gateway_queue_depth" in scraped.text
    started = requests.post(url(two, "r1", f"/v1/model-families/{SLUG}/start"), headers=as_key(keys["ops"]),
                            json={}, timeout=300)  # a prewarm: it may load the weights
    assert started.status_code != 403, started.text  # let through; what the model answers is Forge's test's
    with pytest.raises(ReplicateError) as refused_generate:
        replicate_for(two, "r0", keys["ops"]).predictions.create(version="any", input={"image": image, **SMALL})
    assert refused_generate.value.status == 403
    bootstrap = requests.get(url(two, "r0", "/metrics"), headers=as_key(TOKEN), timeout=30)
    assert bootstrap.status_code == 200  # SVD_TRITON_TOKEN: the bootstrap admin key, as before


def test_a_revoked_key_is_refused_by_the_other_replica_at_its_next_request(two, keys):
    key = keys["leaving"]
    assert requests.get(url(two, "r1", "/v1/predictions"), headers=as_key(key), timeout=30).status_code == 200
    revoked = keys_command(two.database, "revoke", "leaving")
    assert revoked.returncode == 0, revoked.stderr
    refused = requests.get(url(two, "r1", "/v1/predictions"), headers=as_key(key), timeout=30)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        openai_for(two, "r0", key).videos.list()
    assert keys_command(two.database, "revoke", "leaving").returncode == 1
    assert "leaving" in keys_command(two.database, "list").stdout  # kept for the audit trail, marked revoked
