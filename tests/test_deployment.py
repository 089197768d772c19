"""Deployment: warm-up before ready, Prometheus metrics, cold/warm control, container and cluster
files validated offline, and a perf_analyzer smoke run against the real server."""
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TOKEN, _serve
from svd_triton import SVDClient, UnavailableError
from videos import decode_video

SMALL = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2}


def test_the_model_is_warmed_up_before_it_is_reported_ready(triton):
    log = triton.log_path.read_text().splitlines()
    executed = next(i for i, line in enumerate(log) if "svd_xt: executed 1 request(s), 1 video(s)" in line)
    loaded = next(i for i, line in enumerate(log) if "successfully loaded 'svd_xt'" in line)
    assert executed < loaded


def _metrics(server) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://localhost:{server.options.metrics_port}/metrics", timeout=10).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("svd_")}


def test_custom_metrics_are_served_and_increase(triton, sample_png):
    before = _metrics(triton)
    with SVDClient(triton.http_url, token=TOKEN) as svd:
        svd.generate(sample_png, **SMALL)
        with pytest.raises(Exception):
            svd.generate(sample_png, num_frames=1)
    after = _metrics(triton)
    success = 'svd_requests_total{model="svd_xt",outcome="success"}'
    invalid = 'svd_requests_total{model="svd_xt",outcome="invalid"}'
    assert after[success] == before[success] + 1
    assert after[invalid] == before[invalid] + 1
    assert after['svd_frames_generated_total{model="svd_xt"}'] == before['svd_frames_generated_total{model="svd_xt"}'] + 4
    for phase in ("image", "preparing", "denoising", "decoding", "encoding"):
        key = f'svd_request_phase_seconds_count{{model="svd_xt",phase="{phase}"}}'
        assert after[key] == before[key] + 1
    assert after['svd_denoising_steps_per_second{model="svd_xt"}'] > 0
    assert 'svd_requests_total{model="svd_xt",outcome="cancelled"}' in after


def test_cold_and_warm_control_with_explicit_model_control(tmp_path, sample_png):
    with _serve(model_control="explicit") as server:
        with SVDClient(server.http_url, token=TOKEN) as svd:
            assert svd.status()["model_ready"]
            svd.unload()
            cold = svd.status()
            assert not cold["model_ready"] and cold["server_live"]  # strict readiness: not ready while cold
            with pytest.raises(UnavailableError):
                svd.generate(sample_png, **SMALL)
        cli = [sys.executable, "-m", "svd_triton"]
        loaded = subprocess.run(cli + ["load", "--url", server.grpc_url, "--grpc", "--token", TOKEN],
                                capture_output=True, text=True, timeout=120)
        assert loaded.returncode == 0, loaded.stderr
        assert "model svd_xt: ready; weights warm since" in loaded.stdout
        status = subprocess.run(cli + ["status", "--url", server.http_url], capture_output=True, text=True, timeout=60)
        assert "ready (warm)" in status.stdout
        with SVDClient(server.http_url, token=TOKEN) as svd:
            assert decode_video(svd.generate(sample_png, **SMALL).video, "mp4").num_frames == 4
        refused = subprocess.run(cli + ["unload", "--url", server.http_url], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "UnauthorizedError" in refused.stderr  # the token guards the repository API


def test_dockerfile_passes_hadolint():
    done = subprocess.run([Path(sys.executable).parent / "hadolint", str(ROOT / "docker/Dockerfile")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (ROOT / "docker/Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:" in text and "HEALTHCHECK" in text and "/v2/health/ready" in text
    assert "USER 1000" in text  # the base image and its Python: tests/test_image.py


def test_compose_and_kubernetes_run_the_image_the_dockerfile_builds_on_its_ports():
    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())["services"]["svd-xt"]
    container = yaml.safe_load((ROOT / "docker/kubernetes/deployment.yaml").read_text())["spec"]["template"]["spec"]["containers"][0]
    exposed = next(line.split()[1:] for line in (ROOT / "docker/Dockerfile").read_text().splitlines()
                   if line.startswith("EXPOSE "))
    built = ROOT / "docker" / compose["build"]["context"] / compose["build"]["dockerfile"]
    assert built.resolve() == (ROOT / "docker/Dockerfile").resolve()
    assert compose["image"] == container["image"]
    assert sorted(port.split(":")[1] for port in compose["ports"]) == sorted(exposed)
    assert sorted(str(port["containerPort"]) for port in container["ports"]) == sorted(exposed)


def test_compose_file_matches_the_compose_spec():
    import jsonschema

    schema_path = Path(sys.prefix) / "tools" / "compose" / "config" / "compose_spec.json"
    schema = json.loads(schema_path.read_text())
    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    jsonschema.Draft201909Validator(schema).validate(compose)
    service = compose["services"]["svd-xt"]
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert {"8000:8000", "8001:8001", "8002:8002"} <= set(service["ports"])
    assert service["shm_size"] and "SVD_TRITON_TOKEN" in service["environment"] and "HF_TOKEN" in service["environment"]
    assert service["build"]["dockerfile"] == "docker/Dockerfile"


def test_compose_schema_check_catches_mistakes():
    import jsonschema

    schema = json.loads((Path(sys.prefix) / "tools" / "compose" / "config" / "compose_spec.json").read_text())
    broken = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    broken["services"]["svd-xt"]["shm_sise"] = "4gb"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(schema).validate(broken)


@pytest.mark.parametrize("manifest", sorted(p.name for p in (ROOT / "docker/kubernetes").glob("*.yaml")
                                            if p.name != "prometheus-adapter-values.yaml"))
def test_kubernetes_manifests_validate_against_the_schemas(manifest):
    done = subprocess.run([Path(sys.executable).parent / "kubernetes-validate", "--strict", "-k", "1.30.0",
                           str(ROOT / "docker/kubernetes" / manifest)], capture_output=True, text=True)
    assert done.returncode == 0 and "passed" in done.stdout + done.stderr, done.stdout + done.stderr


def test_deployment_probes_use_triton_health_and_request_a_gpu():
    deployment = yaml.safe_load((ROOT / "docker/kubernetes/deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] and pod_security["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    hpa = yaml.safe_load((ROOT / "docker/kubernetes/hpa.yaml").read_text())
    adapter = yaml.safe_load((ROOT / "docker/kubernetes/prometheus-adapter-values.yaml").read_text())
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == adapter["rules"]["custom"][0]["name"]["as"]


def test_model_analyzer_example_parses():
    config = yaml.safe_load((ROOT / "docs/model_analyzer.yaml").read_text())
    assert "svd_xt" in config["profile_models"]
    assert (ROOT / config["perf_analyzer_flags"]["input-data"]).is_file()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_smoke_run(triton, protocol):
    from benchmarks import perf

    url = triton.http_url if protocol == "http" else triton.grpc_url
    with tempfile.TemporaryDirectory() as folder:
        rows = perf.run(url, protocol, perf.INPUTS / "tiny.json", "1", 3, Path(folder) / "out.csv", token=TOKEN,
                        stability=100, timeout=300)
    assert rows and float(rows[0]["Inferences/Second"]) > 0 and int(rows[0]["p50 latency"]) > 0
