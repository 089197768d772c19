"""Deployment: warm-up before ready, Prometheus metrics, cold/warm control, container and cluster
files validated offline (hadolint, Docker Compose's own `config`, kubernetes-validate; what they name
is checked against the code in tests/deploy/test_deploy_drift.py), and a perf_analyzer smoke run."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.support import ADMIN_TOKEN, ROOT, TOKEN, start_server
from tests.support.deploy_files import (ADAPTER_VALUES, COMPOSE_FILE, DOCKERFILE, KUBERNETES, compose_config, compose_model,
                                         dockerfile_stages, kubernetes_objects)
from svd_triton import SVDClient, UnavailableError
from tests.support.prometheus import metrics
from tests.support.videos import decode_video

SMALL = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2}


def test_custom_metrics_are_served_and_increase(triton, sample_png):
    before = metrics(triton)
    with SVDClient(triton.http_url, token=TOKEN) as svd:
        svd.generate(sample_png, **SMALL)
        with pytest.raises(Exception):
            svd.generate(sample_png, num_frames=1)
    after = metrics(triton)
    success = ("svd_requests_total", frozenset({("outcome", "success")}))
    invalid = ("svd_requests_total", frozenset({("outcome", "invalid")}))
    frames = ("svd_frames_generated_total", frozenset())
    assert after[success] == before[success] + 1
    assert after[invalid] == before[invalid] + 1
    assert after[frames] == before[frames] + 4
    for phase in ("image", "preparing", "denoising", "decoding", "encoding"):
        key = ("svd_request_phase_seconds_count", frozenset({("phase", phase)}))
        assert after[key] == before[key] + 1
    assert after[("svd_denoising_steps_per_second", frozenset())] > 0
    assert ("svd_requests_total", frozenset({("outcome", "cancelled")})) in after
    assert after[("svd_requests_running", frozenset())] == 0


def test_cold_and_warm_control_with_explicit_model_control(tmp_path, sample_png):
    with start_server(model_control="explicit") as server:
        # Ready means warmed up: Triton counted the model_warmup request (it reports a request's statistics
        # before releasing it, and the load waits for that release), which svd_requests_total leaves out.
        at_ready = metrics(server)
        assert at_ready[("nv_inference_request_success_total", frozenset())] == 1
        assert at_ready[("svd_requests_total", frozenset({("outcome", "success")}))] == 0
        with SVDClient(server.http_url, token=TOKEN, admin_token=ADMIN_TOKEN) as svd:
            assert svd.status()["model_ready"]
            svd.unload()
            cold = svd.status()
            assert not cold["model_ready"] and cold["server_live"]  # strict readiness: not ready while cold
            with pytest.raises(UnavailableError):
                svd.generate(sample_png, **SMALL)
        cli = [sys.executable, "-m", "svd_triton"]
        loaded = subprocess.run(cli + ["load", "--url", server.grpc_url, "--grpc", "--token", TOKEN,
                                       "--admin-token", ADMIN_TOKEN],
                                capture_output=True, text=True, timeout=120)
        assert loaded.returncode == 0, loaded.stderr
        assert "model svd_xt: ready; weights warm since" in loaded.stdout
        status = subprocess.run(cli + ["status", "--url", server.http_url], capture_output=True, text=True, timeout=60)
        assert "ready (warm)" in status.stdout
        with SVDClient(server.http_url, token=TOKEN) as svd:
            assert decode_video(svd.generate(sample_png, **SMALL).video, "mp4").num_frames == 4
        for key in (["--admin-token", "wrong"], ["--admin-token", TOKEN]):  # the client key is no admin key
            refused = subprocess.run(cli + ["unload", "--url", server.http_url, *key], capture_output=True, text=True,
                                     timeout=60, env={**os.environ, "SVD_TRITON_ADMIN_TOKEN": ""})
            assert refused.returncode == 1 and "UnauthorizedError" in refused.stderr, key
        with SVDClient(server.http_url, token=TOKEN) as svd:
            assert svd.ready()  # nothing was unloaded


def test_dockerfile_passes_hadolint():
    done = subprocess.run([Path(sys.executable).parent / "hadolint", str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    stages = dockerfile_stages()
    assert list(stages) == ["gateway", "triton"]  # a plain `docker build` makes the Triton image
    assert stages["triton"].base.startswith("nvcr.io/nvidia/tritonserver:")  # its Python: tests/deploy/test_image.py
    for stage in stages.values():
        assert stage.healthcheck and stage.user == "1000:1000", stage.name


def test_hadolint_catches_mistakes(tmp_path):
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("FROM python:3.12-slim-bookworm", "FROM python"))
    done = subprocess.run([Path(sys.executable).parent / "hadolint", str(broken)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3006" in done.stdout  # an image without a tag


COMPOSE_ENV = {"SVD_TRITON_TOKEN": TOKEN}


def test_compose_file_passes_docker_compose_config():
    """Docker Compose v2 validates the file against the compose-spec schema and resolves it; the stack is
    Triton and the gateway, PostgreSQL only with its profile."""
    assert set(compose_model(env=COMPOSE_ENV)["services"]) == {"svd-xt", "gateway"}
    services = compose_model("postgres", env=COMPOSE_ENV)["services"]
    assert set(services) == {"svd-xt", "gateway", "postgres"}
    triton, gateway = services["svd-xt"], services["gateway"]
    assert triton["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert triton["shm_size"] and {"HF_TOKEN", "SVD_MODEL_SOURCE"} <= set(triton["environment"])
    assert triton["environment"]["SVD_TRITON_TOKEN"] == gateway["environment"]["SVD_TRITON_TOKEN"] == TOKEN
    assert gateway["depends_on"]["svd-xt"] == {"condition": "service_healthy", "required": True}
    assert gateway["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"


def test_compose_publishes_triton_on_loopback_unless_the_operator_opts_in():
    """Triton's ports (inference without the gateway's limits, metrics) reach this host alone by default; the
    gateway is the public door. SVD_TRITON_BIND opens them; the Kubernetes Service is cluster-internal."""
    for env, address in ((COMPOSE_ENV, "127.0.0.1"), ({**COMPOSE_ENV, "SVD_TRITON_BIND": "0.0.0.0"}, "0.0.0.0")):
        ports = compose_model(env=env)["services"]["svd-xt"]["ports"]
        assert sorted(int(port["published"]) for port in ports) == [8000, 8001, 8002]
        assert {port.get("host_ip") for port in ports} == {address}
    assert kubernetes_objects()["Service/svd-xt"]["spec"]["type"] == "ClusterIP"
    ingress = kubernetes_objects()["Ingress/svd-gateway"]["spec"]
    assert ingress["tls"][0]["secretName"] and ingress["tls"][0]["hosts"] == [ingress["rules"][0]["host"]]


def test_compose_refuses_to_start_without_the_token():
    done = compose_config(env={})
    assert done.returncode != 0 and "required variable SVD_TRITON_TOKEN is missing a value" in done.stderr


@pytest.mark.parametrize("mistake, message", [
    (("shm_size: 4gb", "shm_sise: 4gb"), "additional properties 'shm_sise' not allowed"),
    (("condition: service_healthy\n", "condition: service_ready\n"), "condition value must be one of"),
])
def test_compose_check_catches_mistakes(tmp_path, mistake, message):
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace(*mistake, 1))
    done = compose_config(env=COMPOSE_ENV, path=broken)
    assert done.returncode != 0 and message in done.stderr, done.stderr


@pytest.mark.parametrize("manifest", sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != ADAPTER_VALUES))
def test_kubernetes_manifests_validate_against_the_schemas(manifest):
    done = subprocess.run([Path(sys.executable).parent / "kubernetes-validate", "--strict", "-k", "1.30.0",
                           str(KUBERNETES / manifest)], capture_output=True, text=True)
    assert done.returncode == 0 and "passed" in done.stdout + done.stderr, done.stdout + done.stderr


def test_kubernetes_validation_catches_mistakes(tmp_path):
    broken = tmp_path / "gateway-statefulset.yaml"
    broken.write_text((KUBERNETES / "gateway-statefulset.yaml").read_text().replace("readinessProbe:", "readynessProbe:"))
    done = subprocess.run([Path(sys.executable).parent / "kubernetes-validate", "--strict", "-k", "1.30.0", str(broken)],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "readynessProbe" in done.stdout + done.stderr


def test_deployment_probes_use_triton_health_and_request_a_gpu():
    deployment = yaml.safe_load((ROOT / "docker/kubernetes/deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] and pod_security["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_model_analyzer_example_parses():
    config = yaml.safe_load((ROOT / "docs/model_analyzer.yaml").read_text())
    assert "svd_xt" in config["profile_models"]
    assert (ROOT / config["perf_analyzer_flags"]["input-data"]).is_file()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_smoke_run(triton, protocol):
    from benchmarks import perf

    url = triton.http_url if protocol == "http" else triton.grpc_url
    with tempfile.TemporaryDirectory() as folder:
        # The sample image at the least work: the harness is under test here; the files in benchmarks/inputs are
        # served as written in test_server.py's test_perf_analyzer_input_files_are_valid_requests.
        least = {"WIDTH": 64, "HEIGHT": 64, "NUM_FRAMES": 2, "NUM_INFERENCE_STEPS": 1}
        (Path(folder) / "least.json").write_text(json.dumps(perf.input_data(least)))
        rows = perf.run(url, protocol, Path(folder) / "least.json", "1", 3, Path(folder) / "out.csv", token=TOKEN,
                        stability=100)  # the default timeout is a hang guard, not a bound
    assert rows and float(rows[0]["Inferences/Second"]) > 0 and int(rows[0]["p50 latency"]) > 0


def test_prometheus_scrapes_the_gateway_s_keyless_metrics_listener():
    """The API port's /metrics needs an admin key; the pods' annotations point Prometheus at --metrics-listen."""
    template = kubernetes_objects()["StatefulSet/svd-gateway"]["spec"]["template"]
    args = template["spec"]["containers"][0]["args"]
    listen = args[args.index("--metrics-listen") + 1]
    annotations = template["metadata"]["annotations"]
    assert listen == f"0.0.0.0:{annotations['prometheus.io/port']}" and annotations["prometheus.io/path"] == "/metrics"
    assert {port["containerPort"] for port in template["spec"]["containers"][0]["ports"]} == {8080}  # not a Service's
