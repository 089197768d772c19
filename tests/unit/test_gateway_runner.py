"""The job runner's state changes as each polled family shows them: queued → running (progress in logs) →
succeeded with the output's URL; failed with the model error's code, in each family's words and status;
cancel of a queued job and of a running one (the model's call is cancelled); `Prefer: wait`; a shutdown
giving running jobs back to the queue. Generations are held by the fake until the test releases them, so
every state is observed, never timed. In-process, without Triton."""
from __future__ import annotations

import base64

import pytest

from svd_triton import DeadlineExceededError, InvalidRequestError, ServerError, UnavailableError
from tests.support.fake_model import DEFAULTS, FakeModel, gateway_on, solid_video
from tests.support.waiting import until

DEFAULT_VIDEO = solid_video(**DEFAULTS)
"""The fake's video when a request names no format, size, frames or fps."""


@pytest.fixture
def fake():
    return FakeModel()  # what a test leaves held, the gateway's shutdown cancels


@pytest.fixture
def client(fake, tmp_path):
    """A gateway of its own for each test: one job slot, so that a second job stays queued behind a held one."""
    with gateway_on(fake, tmp_path, concurrency=1) as client:
        yield client


@pytest.fixture(scope="module")
def image_uri(sample_png):
    return "data:image/png;base64," + base64.b64encode(sample_png).decode()


def eventually(read, condition, what: str):
    """`read()` once `condition` holds of it (bounded: only a hung run waits long)."""
    return until(lambda: condition(value := read()) and value, what, seconds=30, interval=0.01)


def create_prediction(client, image_uri, **given) -> dict:
    reply = client.post("/v1/predictions", json={"input": {"image": image_uri, **given}})
    assert reply.status_code == 201, reply.text
    return reply.json()


def prediction(client, prediction_id: str) -> dict:
    return client.get(f"/v1/predictions/{prediction_id}").json()


def test_a_prediction_goes_from_starting_through_processing_to_succeeded(client, fake, image_uri):
    fake.hold()
    created = create_prediction(client, image_uri)
    assert (created["status"], created["output"], created["started_at"]) == ("starting", None, None)
    running = eventually(lambda: prediction(client, created["id"]), lambda p: "1/4 denoising" in p["logs"],
                         "the first denoising step in the logs")
    assert running["status"] == "processing" and running["started_at"] and running["output"] is None
    assert len(fake.held) == 1 and "2/4 denoising" not in running["logs"]
    fake.release()
    done = eventually(lambda: prediction(client, created["id"]), lambda p: p["status"] == "succeeded",
                      "the prediction succeeding")
    assert done["output"].endswith(".mp4") and client.get(done["output"]).content == DEFAULT_VIDEO
    assert "100%|██████████| 4/4 denoising" in done["logs"] and done["logs"].endswith(f"Using seed: {fake.calls[-1].params['seed']}\n")
    assert done["completed_at"] and done["metrics"]["predict_time"] > 0 and done["error"] is None


def test_an_openai_video_reports_progress_while_in_progress(client, fake, image_uri):
    fake.hold()
    created = client.post("/v1/videos", json={"prompt": "drift", "input_reference": {"image_url": image_uri}}).json()
    assert (created["status"], created["progress"]) == ("queued", 0)
    def retrieve():
        return client.get(f"/v1/videos/{created['id']}")

    running = eventually(retrieve, lambda r: r.json()["progress"] > 0, "progress above 0")
    assert (running.json()["status"], running.json()["progress"]) == ("in_progress", 25)  # 1 of 4 steps
    assert running.headers["openai-poll-after-ms"] == "500"
    fake.release()
    done = eventually(retrieve, lambda r: r.json()["status"] == "completed", "the video completing").json()
    assert done["progress"] == 100 and done["expires_at"] > done["completed_at"] and done["error"] is None
    assert client.get(f"/v1/videos/{created['id']}/content").content == DEFAULT_VIDEO


@pytest.mark.parametrize("error,code,stability_status,stability_name", [
    (InvalidRequestError("NUM_FRAMES: 40 is over this deployment's max_num_frames (16)", field="num_frames"),
     "invalid_request", 400, "bad_request"),
    (ServerError("CUDA out of memory"), "server_error", 500, "internal_error"),
])
def test_a_model_error_fails_the_job_in_each_family_s_words(client, fake, image_uri, sample_png, error, code,
                                                            stability_status, stability_name):
    fake.failure = error
    replicate = create_prediction(client, image_uri)["id"]
    video = client.post("/v1/videos", json={"prompt": "x", "input_reference": {"image_url": image_uri}}).json()["id"]
    generation = client.post("/v2beta/image-to-video", files={"image": ("image.png", sample_png, "image/png")}).json()
    failed = eventually(lambda: prediction(client, replicate), lambda p: p["status"] == "failed", "the failure")
    assert (failed["error"], failed["output"]) == (str(error), None)
    openai = eventually(lambda: client.get(f"/v1/videos/{video}").json(), lambda v: v["status"] == "failed",
                        "the video failing")
    assert openai["error"] == {"code": code, "message": str(error), "param": error.field} and openai["progress"] == 0
    result = f"/v2beta/image-to-video/result/{generation['id']}"
    stability = eventually(lambda: client.get(result), lambda r: r.status_code != 202, "the generation failing")
    assert stability.status_code == stability_status
    assert (stability.json()["name"], stability.json()["errors"]) == (stability_name, [str(error)])


def test_cancel_of_a_queued_prediction_is_at_once_and_it_never_reaches_the_model(client, fake, image_uri):
    fake.hold()
    first = create_prediction(client, image_uri, seed=1)
    until(lambda: fake.held, "the first prediction running", seconds=30, interval=0.01)
    queued = create_prediction(client, image_uri, seed=2)
    assert prediction(client, queued["id"])["status"] == "starting"  # the one slot is the first's
    canceled = client.post(f"/v1/predictions/{queued['id']}/cancel").json()
    assert (canceled["status"], canceled["output"]) == ("canceled", None) and canceled["completed_at"]
    after = create_prediction(client, image_uri, seed=3)
    fake.release()
    eventually(lambda: prediction(client, after["id"]), lambda p: p["status"] == "succeeded", "the third succeeding")
    assert [call.params["seed"] for call in fake.calls] == [1, 3]
    assert prediction(client, first["id"])["status"] == "succeeded"
    assert prediction(client, queued["id"])["status"] == "canceled"


def test_cancel_of_a_running_prediction_cancels_the_model_s_call(client, fake, image_uri):
    fake.hold()
    created = create_prediction(client, image_uri)
    [call] = until(lambda: list(fake.held), "the prediction running", seconds=30, interval=0.01)
    canceled = client.post(f"/v1/predictions/{created['id']}/cancel").json()
    assert (canceled["status"], canceled["output"], call.cancelled) == ("canceled", None, True)
    assert not fake.held and prediction(client, created["id"])["status"] == "canceled"


def test_delete_of_a_running_openai_video_cancels_it_and_forgets_it(client, fake, image_uri):
    fake.hold()
    video = client.post("/v1/videos", json={"prompt": "x", "input_reference": {"image_url": image_uri}}).json()
    [call] = until(lambda: list(fake.held), "the video running", seconds=30, interval=0.01)
    deleted = client.delete(f"/v1/videos/{video['id']}")
    assert deleted.json() == {"id": video["id"], "object": "video.deleted", "deleted": True} and call.cancelled
    assert client.get(f"/v1/videos/{video['id']}").status_code == 404


def test_prefer_wait_answers_with_the_finished_prediction(client, fake, image_uri):
    reply = client.post("/v1/predictions", json={"input": {"image": image_uri}}, headers={"Prefer": "wait"})
    assert reply.status_code == 201 and reply.headers["Preference-Applied"] == "wait=60"
    assert reply.json()["status"] == "succeeded" and client.get(reply.json()["output"]).content == DEFAULT_VIDEO


def test_prefer_wait_n_answers_with_the_prediction_as_it_is_when_n_runs_out(client, fake, image_uri):
    fake.hold()
    reply = client.post("/v1/predictions", json={"input": {"image": image_uri}}, headers={"Prefer": "wait=0.2"})
    assert reply.status_code == 201 and reply.headers["Preference-Applied"] == "wait=0.2"
    assert reply.json()["status"] in ("starting", "processing") and reply.json()["output"] is None


def test_without_prefer_wait_the_answer_is_the_queued_prediction(client, fake, image_uri):
    reply = client.post("/v1/predictions", json={"input": {"image": image_uri}})
    assert "Preference-Applied" not in reply.headers and reply.json()["status"] == "starting"


def test_a_shutdown_gives_a_running_job_back_to_the_queue_and_the_next_gateway_runs_it(fake, tmp_path, image_uri):
    with gateway_on(fake, tmp_path) as client:
        fake.hold()
        created = create_prediction(client, image_uri, seed=7)
        [call] = until(lambda: list(fake.held), "the prediction running", seconds=30, interval=0.01)
    assert call.cancelled
    successor = FakeModel()
    with gateway_on(successor, tmp_path) as client:
        done = eventually(lambda: prediction(client, created["id"]), lambda p: p["status"] == "succeeded",
                          "the next gateway running the prediction")
    assert [c.params for c in successor.calls] == [{"seed": 7}]
    assert "the job is queued again" in done["logs"] and done["logs"].endswith("Using seed: 7\n")


def test_an_openai_video_s_image_is_stored_once_and_remixed_from_there(client, fake, image_uri, sample_png, tmp_path):
    """The image is kept with the job as long as its video (no second copy as an uploaded file), a remix starts
    from it, and deleting the video deletes it."""
    created = client.post("/v1/videos", json={"prompt": "drift", "input_reference": {"image_url": image_uri}}).json()
    eventually(lambda: client.get(f"/v1/videos/{created['id']}").json(), lambda v: v["status"] == "completed",
               "the video completing")
    assert client.get("/v1/files").json()["results"] == []  # not stored a second time
    kept = tmp_path / "inputs" / created["id"]
    assert kept.read_bytes() == sample_png
    remix = client.post(f"/v1/videos/{created['id']}/remix", json={"prompt": "drift at dusk"}).json()
    eventually(lambda: client.get(f"/v1/videos/{remix['id']}").json(), lambda v: v["status"] == "completed",
               "the remix completing")
    assert fake.calls[-1].image == sample_png  # the remix started from the kept image
    assert client.delete(f"/v1/videos/{created['id']}").json()["deleted"]
    assert not kept.exists()


STUB_DIED = ServerError("Stub process 'svd_xt_0_0' is not healthy.")
"""What Triton answers the calls in flight when the model's process dies."""


@pytest.fixture
def retrying(fake, tmp_path):
    """A gateway that retries a lost attempt after 0.05 s (then 0.1 s), three attempts in all."""
    with gateway_on(fake, tmp_path, concurrency=1, retry_backoff=0.05, max_attempts=3) as client:
        yield client


@pytest.mark.parametrize("lost", [STUB_DIED, UnavailableError("server not reachable (gRPC UNAVAILABLE)")])
def test_an_attempt_lost_to_triton_is_run_again_with_the_same_seed_and_the_job_succeeds(retrying, fake, image_uri,
                                                                                         lost):
    fake.fail_next = [lost]
    created = create_prediction(retrying, image_uri)
    done = eventually(lambda: prediction(retrying, created["id"]), lambda p: p["status"] in ("succeeded", "failed"),
                      "the retry")
    assert done["status"] == "succeeded" and done["error"] is None
    assert f"attempt 1 of 3 was lost ({lost}); attempt 2 starts in 0.05 s" in done["logs"]
    first, second = fake.calls[-2:]
    assert first.params["seed"] == second.params["seed"]  # chosen when the job was made: the same video again
    metrics = retrying.get("/metrics").text
    cause = "model_process" if lost is STUB_DIED else "unavailable"
    assert f'svd_gateway_job_retries_total{{cause="{cause}"}} 1.0' in metrics


def test_a_request_that_kills_the_model_every_time_fails_after_max_attempts_saying_so(retrying, fake, image_uri):
    fake.failure = STUB_DIED
    created = create_prediction(retrying, image_uri)
    failed = eventually(lambda: prediction(retrying, created["id"]), lambda p: p["status"] == "failed", "the failure")
    assert failed["error"].startswith("the model process died while running this request 3 times; the last time: ")
    assert len(fake.calls) == 3 and failed["logs"].count("was lost") == 2


@pytest.mark.parametrize("fault", [
    InvalidRequestError("NUM_FRAMES: 40 is over this deployment's max_num_frames (16)", field="num_frames"),
    DeadlineExceededError("no answer within the client's timeout"),  # its whole time budget is spent
])
def test_a_fault_of_the_request_itself_is_never_retried(retrying, fake, image_uri, fault):
    fake.failure = fault
    created = create_prediction(retrying, image_uri)
    failed = eventually(lambda: prediction(retrying, created["id"]), lambda p: p["status"] == "failed", "the failure")
    assert len(fake.calls) == 1 and "was lost" not in failed["logs"]


def test_a_synchronous_request_lost_to_triton_is_run_again_on_its_own_replica(retrying, fake, image_uri):
    fake.fail_next = [STUB_DIED]
    reply = retrying.post("/predict", json={"image": image_uri})
    assert reply.status_code == 200 and base64.b64decode(reply.json()["predictions"])
    assert len(fake.calls) == 2


def test_jobs_wait_queued_while_the_model_is_not_ready_and_run_once_it_is(retrying, fake, image_uri):
    fake.is_ready = False
    try:
        created = create_prediction(retrying, image_uri)
        for _ in range(20):  # a claim loop that ignored readiness would have taken it within these polls
            assert prediction(retrying, created["id"])["status"] == "starting" and not fake.calls
        waiting = eventually(lambda: prediction(retrying, created["id"]), lambda p: p["logs"], "a line in its logs")
        assert waiting["logs"] == "waiting for the model: Triton is down, restarting or loading it\n"
    finally:
        fake.is_ready = True
    done = eventually(lambda: prediction(retrying, created["id"]), lambda p: p["status"] == "succeeded", "the run")
    assert len(fake.calls) == 1 and "was lost" not in done["logs"]
    assert done["logs"].count("waiting for the model") == 1  # written once, however many times readiness was asked


def test_a_request_too_large_for_the_device_even_alone_is_not_retried(retrying, fake, image_uri):
    fake.failure = UnavailableError("not enough memory: 25 frames at 1024×576 need 21.3 GiB, 12.0 GiB free")
    created = create_prediction(retrying, image_uri)
    failed = eventually(lambda: prediction(retrying, created["id"]), lambda p: p["status"] == "failed", "the failure")
    assert len(fake.calls) == 1 and failed["error"].startswith("not enough memory")


def test_a_job_whose_attempt_died_with_the_model_runs_again_alone(fake, tmp_path, image_uri):
    """Its retry waits queued for the generations in flight, and nothing is claimed meanwhile: if it is what kills
    the model, it takes no neighbour with it (the store's side, across replicas: tests/unit/test_store_queue.py)."""
    with gateway_on(fake, tmp_path, concurrency=3, retry_backoff=0.05) as client:
        fake.hold()
        running = create_prediction(client, image_uri)
        until(lambda: len(fake.held) == 1, "the first job running")
        fake.fail_next = [STUB_DIED]
        suspect = create_prediction(client, image_uri)
        eventually(lambda: prediction(client, suspect["id"]), lambda p: "attempt 2 starts" in p["logs"], "its retry")
        later = create_prediction(client, image_uri)
        for _ in range(20):  # polls in which a runner that ignored the isolation would have sent either
            assert len(fake.calls) == 2
            assert [prediction(client, job["id"])["status"] for job in (suspect, later)] == ["starting", "starting"]
        fake.release()
        for job in (running, suspect, later):
            assert eventually(lambda: prediction(client, job["id"]), lambda p: p["status"] in ("succeeded", "failed"),
                              "the jobs")["status"] == "succeeded"
        seeds = [call.params["seed"] for call in fake.calls]
        assert len(seeds) == 4 and seeds[2] == seeds[1]  # its retry ran before the job queued after it


def test_a_request_no_model_took_costs_no_attempt(retrying, fake, image_uri):
    """A model being reloaded answers 'unknown model': the request never ran, so sending it again spends none of
    its --max-attempts (three of these and one lost attempt still leave it room to succeed)."""
    reloading = UnavailableError("Request for unknown model: 'svd_xt' has no available versions")
    fake.fail_next = [reloading, STUB_DIED, reloading, reloading]
    created = create_prediction(retrying, image_uri)
    done = eventually(lambda: prediction(retrying, created["id"]), lambda p: p["status"] in ("succeeded", "failed"),
                      "the job")
    assert done["status"] == "succeeded" and len(fake.calls) == 5
    assert done["logs"].count("could not take attempt") == 3 and "attempt 1 of 3 was lost" in done["logs"]
