"""Keep-warm against a real tritonserver: idle release, cold start on the next request, prewarm, pin, release.

The module's server releases after 2 s idle (SVD_KEEP_WARM_SECONDS=2); on CPU the "device" is host
memory, so release is proven from where the weights live: svd_weight_bytes_on_device falls to 0
(the reload mechanism drops every weight tensor) and comes back with the next request.
"""
import threading
import time

import pytest
import requests

from tests.support import TOKEN
from tests.support.gateways import Gateway, settings_for
from tests.support.keep_warm_server import gauge, keep_warm_server, model_state
from tests.support.prometheus import metrics
from svd_triton import SVDClient
from tests.support.videos import decode_video

SMALL = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2}
WINDOW = 2


@pytest.fixture(scope="module")
def server():
    with keep_warm_server(WINDOW) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(server, tmp_path_factory):
    with Gateway(settings_for(server, tmp_path_factory.mktemp("keep-warm"))) as running:
        yield running


def route_status(gateway):
    """What Forge's runtime status route says (the seed's "Check runtime" URL)."""
    url = f"{gateway.url}/v1/model-families/stabilityai-stable-video-diffusion/status?version=img2vid-xt-diffusers"
    return requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()


@pytest.fixture
def client(server):
    with SVDClient(server.http_url, token=TOKEN, timeout=300) as svd:
        yield svd


def wait_for_state(server, wanted, timeout=WINDOW + 10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if model_state(server) == wanted:
            return
        time.sleep(0.2)
    raise AssertionError(f"model never became {wanted}; it is {model_state(server)}")


def cold_starts(server):
    return gauge(server, "svd_cold_starts_total")


def test_idle_model_releases_its_weights_and_the_next_request_pays_a_cold_start(server, gateway, client, sample_png):
    video = client.generate(sample_png, **SMALL).video
    assert decode_video(video, "mp4").num_frames == 4
    assert model_state(server) == "warm" and gauge(server, "svd_weight_bytes_on_device") > 1_000_000
    assert route_status(gateway)["status"] == "warm"
    wait_for_state(server, "cold")
    status = route_status(gateway)
    assert status["status"] == "cold" and status["keep_warm_left_seconds"] is None
    assert gauge(server, "svd_weight_bytes_on_device") == 0  # no weight tensor is held any more
    assert gauge(server, "svd_keep_warm_remaining_seconds") == 0
    state = client.control("state")
    assert state["state"] == "cold" and state["weight_bytes_on_device"] == 0 and state["release_mechanism"] == "reload"
    before = cold_starts(server)

    video = client.generate(sample_png, seed=5, **SMALL).video
    assert decode_video(video, "mp4").num_frames == 4
    assert cold_starts(server) == before + 1
    assert gauge(server, "svd_last_cold_start_seconds") > 0
    assert route_status(gateway)["last_cold_start_ms"] > 0
    state = client.control("state")
    assert state["state"] == "warm" and state["cold_starts"] == before + 1 and state["weight_bytes_on_device"] > 0
    assert 0 < state["keep_warm_left_seconds"] <= WINDOW


def test_requests_arriving_around_the_release_all_succeed(server, client, sample_png):
    """Each request lands at a different moment of the release (the timer ticks each second after 2 s idle)."""
    for delay in (1.9, 2.3, 2.7, 3.1):
        client.generate(sample_png, **SMALL)
        time.sleep(delay)
        assert decode_video(client.generate(sample_png, **SMALL).video, "mp4").num_frames == 4


def test_a_request_longer_than_the_window_is_never_released_under(server, client, sample_png):
    """Steps grow until a request outlasts the window on this machine (16, then 64: the CPU config's whole
    max_work budget), so a faster CPU still tests what a slow one does."""
    for steps in (16, 64):
        client.control("prewarm")
        seen, done = [], threading.Event()

        def watch():
            while not done.is_set():
                values = metrics(server)
                seen.append((values[("svd_model_state", frozenset({("state", "warm")}))],
                             values[("svd_weight_bytes_on_device", frozenset())]))
                time.sleep(0.25)

        watcher = threading.Thread(target=watch)
        started = time.monotonic()
        watcher.start()
        try:
            # Two segments (two pipeline calls): the window must not run out between them either.
            result = client.generate(sample_png, width=128, height=128, num_frames=8, num_inference_steps=steps,
                                     segments=2)
        finally:
            done.set()
            watcher.join()
        assert decode_video(result.video, "mp4").num_frames == 8 + 7
        assert seen and all(warm == 1 and weights > 0 for warm, weights in seen), seen
        if time.monotonic() - started > WINDOW + 1.5:
            return
    pytest.fail(f"no request outlasted the {WINDOW} s keep-warm window, even at {steps} steps")


def test_prewarm_loads_without_a_video_pin_outlasts_the_window_release_frees(server, client):
    client.control("release")
    assert client.control("state")["state"] == "cold"
    before = cold_starts(server)

    prewarmed = client.control("prewarm")
    assert prewarmed["was_cold_start"] and prewarmed["state"] == "warm" and prewarmed["startup_seconds"] > 0
    assert "video" not in prewarmed and cold_starts(server) == before + 1
    assert client.control("prewarm")["was_cold_start"] is False  # already warm: nothing loaded again

    pinned = client.control("pin")
    assert pinned["pinned"] and pinned["keep_warm_left_seconds"] is None
    time.sleep(WINDOW + 2.5)
    assert model_state(server) == "warm" and gauge(server, "svd_model_pinned") == 1
    assert gauge(server, "svd_keep_warm_remaining_seconds") == -1

    released = client.control("release")
    assert released["state"] == "cold" and not released["pinned"] and released["weight_bytes_on_device"] == 0
    assert model_state(server) == "cold"


def test_bad_control_values_are_refused_naming_the_input(server, client, sample_png):
    from svd_triton.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="CONTROL.*prewarm, pin, release"):
        client.control("explode")
    with pytest.raises(InvalidRequestError, match="unknown parameter 'control'"):
        client.generate(sample_png, control="pin", **SMALL)


def test_release_racing_generation_in_the_engine_never_fails(sample_png):
    """Engine level, no server: one thread releases in a loop while another generates; every request succeeds."""
    from svd_engine import SVDEngine
    from svd_engine.keep_warm import KeepWarm

    engine = SVDEngine.load(model_source="tiny", device="cpu", default_width=64, default_height=64)
    keep_warm = KeepWarm(engine, 0)  # 0: release right after each execution, on top of the racing thread
    stop = threading.Event()

    def release_loop():
        while not stop.is_set():
            keep_warm.release()
            time.sleep(0.01)

    racer = threading.Thread(target=release_loop)
    racer.start()
    try:
        for seed in range(6):
            with keep_warm.serving():
                [result] = engine.generate([engine.parse(sample_png, seed=seed, num_frames=2, num_inference_steps=1)])
            assert not isinstance(result, Exception) and result.frames.shape == (2, 64, 64, 3)
    finally:
        stop.set()
        racer.join()
    assert keep_warm.cold_starts >= 5 and keep_warm.state()["state"] == "cold"
    assert engine.weight_bytes_on_device() == 0


def test_cli_warm_pin_release_and_status(server, capsys):
    from svd_triton.cli import main

    connection = ["--url", server.http_url, "--token", TOKEN]
    assert main(["warm", "--release", *connection]) == 0
    assert "weights cold since" in capsys.readouterr().out
    assert main(["status", *connection]) == 0
    assert "model svd_xt: ready; weights cold since" in capsys.readouterr().out
    assert main(["warm", *connection]) == 0
    out = capsys.readouterr().out
    assert out.startswith("prewarm: cold start ") and "released after" in out
    assert main(["warm", "--pin", *connection]) == 0
    assert "pin: already warm; weights warm since" in capsys.readouterr().out and model_state(server) == "warm"
    assert main(["warm", "--release", *connection]) == 0
    assert model_state(server) == "cold"


def test_control_over_a_streaming_deployment(triton_stream):
    with SVDClient(triton_stream.grpc_url, protocol="grpc", token=TOKEN, timeout=120) as svd:
        assert svd.streams
        state = svd.control("prewarm")
        assert state["state"] == "warm" and state["action"] == "prewarm" and state["keep_warm_seconds"] == 300
