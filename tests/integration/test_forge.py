"""The Forge catalogue's own scripts and sample request against the gateway and a real tritonserver.

Query strings are the ones the seed page's scripts build (urlencode of model_version, gpu_type,
region); assertions read the JSON fields those scripts parse. The module's server never releases on
its own (SVD_KEEP_WARM_SECONDS=-1), so a fresh model shows "no traffic" first and `stop` makes it cold.
"""
import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlencode

import pytest
import requests

from tests.support import SUPPORT, TOKEN
from tests.support.keep_warm_server import gauge, keep_warm_server, model_state
from svd_gateway.families.forge.router import histogram_quantile
from tests.support.videos import decode_video

SLUG = "stabilityai-stable-video-diffusion"
PINS = {"model_version": "img2vid-xt-diffusers", "gpu_type": "L40S", "region": "eu-north1"}
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
SAMPLE = json.loads((SUPPORT / "forge_sample_request.json").read_text())
"""The seed page's sample body, verbatim (a 16×16 PPM data URI, prompt, guidance 7.5, model, model_version)."""
CPU_SIZE = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2}
"""The only fields changed for the CPU config: 1024×576, 25 frames, 25 steps would take hours here."""


@pytest.fixture(scope="module")
def triton():
    with keep_warm_server(-1) as server:
        yield server


@pytest.fixture(scope="module")
def gateway_triton():
    return "triton"


@pytest.fixture(scope="module")
def gateway_options():
    return {"gpu_hour_price": 1.82}


def get(gateway, path, **params):
    """GET as the seed's scripts do: the path with urlencoded params, the bearer token."""
    url = f"{gateway.url}{path}" + ("?" + urlencode(params) if params else "")
    return requests.get(url, headers=HEADERS, timeout=60)


def post(gateway, path, body, timeout=300):
    return requests.post(f"{gateway.url}{path}", json=body, headers=HEADERS, timeout=timeout)


def test_without_traffic_the_routes_say_so_instead_of_inventing_numbers(triton, gateway):
    reply = get(gateway, f"/v1/models/{quote(SLUG, safe='')}/reliability", **PINS)
    assert reply.status_code == 200, reply.text
    payload = reply.json()
    assert payload["slug"] == SLUG and payload["reliability_status"] == "no_traffic"
    assert payload["supported_rows"] == 0 and payload["total_rows"] == 1 and payload["filters"] == PINS
    assert payload["fastest_supported_target"] is None and payload["lowest_cost_supported_target"] is None
    assert payload["status_counts"] == {"no_traffic": 1} and payload["failure_reason_counts"] == {}
    estimate = get(gateway, f"/v1/models/{SLUG}/run-estimate", **PINS).json()
    assert estimate["warm_request_ms_p50"] is None and estimate["estimated_warm_request_cost_usd"] is None
    assert any("no request measured yet" in w for w in estimate["warnings"])


def test_verify_target_and_runtime_status_with_pins_reported_not_refused(gateway):
    routes = get(gateway, f"/v1/models/{SLUG}/inference-routes", **PINS)
    assert routes.status_code == 200, routes.text
    [route] = routes.json()["routes"]
    assert route["route"] == f"/v1/inference/{SLUG}" and route["method"] == "POST" and route["model"] == SLUG
    assert route["gpu_type"] == "cpu" and route["region"] == "local" and route["model_version"] == PINS["model_version"]
    assert [w for w in routes.json()["warnings"] if "gpu_type 'L40S'" in w and "'cpu'" in w]
    status = get(gateway, f"/v1/model-families/{SLUG}/status", version=PINS["model_version"]).json()
    assert status["status"] == "warm" and status["keep_warm_left_seconds"] is None  # -1: never released


def test_the_seed_sample_request_verbatim(triton, gateway):
    body = {**SAMPLE, **CPU_SIZE}
    assert body["image"].startswith("data:image/x-portable-pixmap;base64,") and body["guidance_scale"] == 7.5
    reply = post(gateway, f"/v1/inference/{SLUG}", body)
    assert reply.status_code == 200, reply.text
    payload = reply.json()
    video = decode_video(base64.b64decode(payload["video"]), payload["format"])
    assert video.size == (64, 64) and video.num_frames == 4 and payload["seed"] == 17
    assert any("prompt" in warning for warning in payload["warnings"])
    assert not any("model_version" in warning for warning in payload["warnings"])  # the deployment's own version


def test_with_traffic_estimate_and_reliability_come_from_measurements(triton, gateway):
    post(gateway, f"/v1/inference/{SLUG}", {**SAMPLE, **CPU_SIZE})  # at least one request, whatever ran before
    estimate = get(gateway, f"/v1/models/{SLUG}/run-estimate", **PINS).json()
    assert estimate["warm_request_ms_p50"] > 0 and estimate["request_samples"] >= 1
    assert estimate["estimated_warm_request_cost_usd"] == pytest.approx(estimate["warm_request_ms_p50"] / 3.6e6 * 1.82, rel=1e-3)
    payload = get(gateway, f"/v1/models/{SLUG}/reliability", **PINS).json()
    assert payload["reliability_status"] == "works" and payload["supported_rows"] == 1
    fastest = payload["fastest_supported_target"]
    assert fastest == payload["lowest_cost_supported_target"]
    assert fastest["gpu_type"] == "cpu" and fastest["region"] == "local" and fastest["observed_success_rate"] == 1.0
    assert fastest["request_ms_p50"] == estimate["warm_request_ms_p50"] and fastest["cost_per_gpu_hour_usd"] == 1.82

    # Refused by the model, not by the gateway's schema (each bound alone is in range): counted as invalid.
    bad = post(gateway, f"/v1/inference/{SLUG}", {**SAMPLE, **CPU_SIZE, "min_guidance_scale": 10.0})
    assert bad.status_code == 400 and "min_guidance_scale" in bad.json()["error"]["message"]
    counts = get(gateway, f"/v1/models/{SLUG}/reliability").json()
    assert counts["failure_reason_counts"]["invalid"] >= 1 and counts["reliability_status"] == "works"  # client error
    assert counts["filters"] == {}


def test_stop_then_twenty_concurrent_starts_load_once_and_all_answer(triton, gateway):
    stopped = post(gateway, f"/v1/model-families/{SLUG}/stop", {"version": PINS["model_version"]})
    assert stopped.status_code == 200 and stopped.json()["status"] == "cold"
    assert get(gateway, f"/v1/model-families/{SLUG}/status").json()["status"] == "cold"
    before = gauge(triton, "svd_cold_starts_total")
    body = {"version": PINS["model_version"], "gpu_type": "L40S", "region": "eu-north1", "run_until_stopped": False}
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda _: post(gateway, f"/v1/model-families/{SLUG}/start", body), range(20)))
    assert [r.status_code for r in replies] == [200] * 20, [r.text for r in replies if r.status_code != 200]
    payloads = [r.json() for r in replies]
    assert gauge(triton, "svd_cold_starts_total") == before + 1  # one load
    cold = [p for p in payloads if p["was_cold_start"]]
    assert cold and all(p["startup_ms"] > 0 for p in cold)
    first = payloads[0]
    assert {"slug", "gpu_type", "region", "startup_ms", "was_cold_start", "keep_warm"} <= set(first)
    assert first["slug"] == SLUG and first["gpu_type"] == "cpu" and first["keep_warm"] is False
    assert any("region 'eu-north1'" in w for w in first["warnings"])
    assert model_state(triton) == "warm"


def test_run_until_stopped_pins_and_stop_releases(triton, gateway):
    pinned = post(gateway, f"/v1/model-families/{SLUG}/start", {"version": PINS["model_version"], "run_until_stopped": True})
    assert pinned.status_code == 200 and pinned.json()["keep_warm"] is True
    status = get(gateway, f"/v1/model-families/{SLUG}/status").json()
    assert status["status"] == "warm" and status["keep_warm"] is True
    assert post(gateway, f"/v1/model-families/{SLUG}/stop", {}).json() == {
        "slug": SLUG, "version": PINS["model_version"], "status": "cold", "keep_warm": False}
    assert gauge(triton, "svd_weight_bytes_on_device") == 0
    again = post(gateway, f"/v1/inference/{SLUG}", {**SAMPLE, **CPU_SIZE})  # served, paying the cold start
    assert again.status_code == 200 and model_state(triton) == "warm"


def test_minus_one_never_releases(triton, gateway):
    post(gateway, f"/v1/inference/{SLUG}", {**SAMPLE, **CPU_SIZE})
    time.sleep(3)
    assert model_state(triton) == "warm" and gauge(triton, "svd_keep_warm_remaining_seconds") == -1
    assert gauge(triton, "svd_weight_bytes_on_device") > 0


@pytest.mark.parametrize("path", [
    f"/v1/models/{SLUG}/inference-routes", f"/v1/models/{SLUG}/run-estimate", f"/v1/models/{SLUG}/reliability",
    f"/v1/model-families/{SLUG}/status"])
def test_wrong_token_is_401(gateway, path):
    for headers in ({}, {"Authorization": "Bearer nope"}):
        reply = requests.get(f"{gateway.url}{path}?{urlencode(PINS)}", headers=headers, timeout=30)
        assert reply.status_code == 401
    reply = requests.post(f"{gateway.url}/v1/model-families/{SLUG}/start", json={}, headers={"Authorization": "Bearer x"}, timeout=30)
    assert reply.status_code == 401


@pytest.mark.parametrize("method,path", [
    ("get", "/v1/models/{}/inference-routes"), ("get", "/v1/models/{}/run-estimate"), ("get", "/v1/models/{}/reliability"),
    ("get", "/v1/model-families/{}/status"), ("post", "/v1/model-families/{}/start"), ("post", "/v1/inference/{}")])
def test_unknown_slug_is_404_naming_it(gateway, method, path):
    body = {**SAMPLE, **CPU_SIZE} if "inference/" in path else {}
    reply = getattr(requests, method)(gateway.url + path.format("stable-diffusion-xl"), headers=HEADERS, timeout=60,
                                      **({"json": body} if method == "post" else {}))
    assert reply.status_code == 404 and "'stable-diffusion-xl'" in reply.json()["error"]["message"]


@pytest.mark.parametrize("params", [
    {"gpu_type": "L40S" * 100}, {"region": "eu north\n1"}, {"model_version": "../../etc/passwd"}, {"gpu_type": ""}])
def test_absurd_query_values_are_400(gateway, params):
    reply = get(gateway, f"/v1/models/{SLUG}/reliability", **params)
    assert reply.status_code == 400, reply.text
    assert list(params)[0] in reply.json()["error"]["message"]


def test_absurd_start_bodies_are_400(gateway):
    for body in ({"run_until_stopped": "forever"}, {"gpu_type": "x" * 500}, {"replicas": 100}):
        reply = post(gateway, f"/v1/model-families/{SLUG}/start", body)
        assert reply.status_code == 400, reply.text


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(1.0, 0), (2.0, 10), (4.0, 20), (float("inf"), 20)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(2.0)
    assert histogram_quantile(0.25, buckets) == pytest.approx(1.5)
    assert histogram_quantile(0.5, [(1.0, 0), (float("inf"), 0)]) is None
    assert histogram_quantile(0.5, [(1.0, 0), (float("inf"), 4)]) == 1.0  # all beyond the last bound


def test_openapi_documents_the_forge_routes_and_not_the_invented_ones(gateway):
    paths = requests.get(f"{gateway.url}/openapi.json", timeout=30).json()["paths"]
    assert {"/v1/models/{slug}/inference-routes", "/v1/models/{slug}/run-estimate", "/v1/models/{slug}/reliability",
            "/v1/model-families/{slug}/status", "/v1/model-families/{slug}/start", "/v1/model-families/{slug}/stop",
            "/v1/inference/{slug}"} <= set(paths)
    assert not {"/v1/inference/{slug}/status", "/v1/inference/{slug}/estimate"} & set(paths)
    start = paths["/v1/model-families/{slug}/start"]["post"]
    assert "run_until_stopped" in json.dumps(requests.get(f"{gateway.url}/openapi.json", timeout=30).json()["components"])
    assert start["tags"] == ["Nebius Forge"]
