"""`svd-triton doctor`: the judgement from the facts of machines this one is not (`diagnose` reads nothing
from the system), then the command itself on this machine."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from svd_triton.doctor import GIB, Facts, Gpu, diagnose, exit_code

CPU_MACHINE = Facts(python="Python 3.11.7", triton="embedded tritonserver from nvidia-pytriton 0.7.0",
                    torch="2.13.0+cpu", torch_cuda=None, driver=None, gpu_seen=False, gpus=(), shm_bytes=8 * GIB,
                    config_variant="cpu", model_source="tiny", hub_token=False, weights_problem=None)
H100 = Gpu("NVIDIA H100 80GB HBM3", (9, 0), free_bytes=79 * GIB, total_bytes=80 * GIB)
GPU_MACHINE = dataclasses.replace(CPU_MACHINE, torch="2.15.0+cu130", torch_cuda="13.0", driver="580.65.06",
                                  gpu_seen=True, gpus=(H100,), config_variant="default",
                                  model_source="stabilityai/stable-video-diffusion-img2vid-xt", hub_token=True)
UNCACHED = "'stabilityai/stable-video-diffusion-img2vid-xt' is not in the local Hugging Face cache (LocalEntryNotFoundError)"


def levels(facts: Facts) -> dict[str, str]:
    return {check.name: check.level for check in diagnose(facts)}


def detail(facts: Facts, name: str) -> str:
    return next(check.detail for check in diagnose(facts) if check.name == name)


def test_a_cpu_machine_is_ready_for_the_built_in_models_with_a_warning():
    assert levels(CPU_MACHINE) == {"python": "ok", "triton": "ok", "torch": "ok", "gpu": "warn", "shm": "ok", "weights": "ok"}
    assert "no GPU visible" in detail(CPU_MACHINE, "gpu")
    assert exit_code(diagnose(CPU_MACHINE), strict=False) == 0
    assert exit_code(diagnose(CPU_MACHINE), strict=True) == 2


def test_an_h100_with_cached_weights_passes_strict():
    facts = dataclasses.replace(GPU_MACHINE, weights_problem=None)
    assert set(levels(facts).values()) == {"ok"}
    assert "FP8 too" in detail(facts, "precision") and "79.0 of 80.0 GiB free" in detail(facts, "gpu memory")
    assert exit_code(diagnose(facts), strict=True) == 0


@pytest.mark.parametrize("gpu, memory, precision", [
    (Gpu("Tesla T4", (7, 5), 15 * GIB, 16 * GIB), "fail", "warn"),            # too small, fp16 only
    (Gpu("NVIDIA L4", (8, 9), 22 * GIB, 23 * GIB), "warn", "ok"),             # svd_xt only
    (Gpu("NVIDIA A100-SXM4-40GB", (8, 0), 39 * GIB, 40 * GIB), "ok", "ok"),  # bf16, no FP8
])
def test_gpu_memory_and_precision_follow_the_card(gpu, memory, precision):
    facts = dataclasses.replace(GPU_MACHINE, gpus=(gpu,), weights_problem=None)
    assert (levels(facts)["gpu memory"], levels(facts)["precision"]) == (memory, precision)
    if memory == "warn":
        assert "--svd-only" in detail(facts, "gpu memory")


def test_a_gpu_that_torch_cannot_use_fails_naming_why():
    cpu_build = dataclasses.replace(GPU_MACHINE, torch="2.13.0+cpu", torch_cuda=None, gpus=())
    assert levels(cpu_build)["cuda"] == "fail" and "CPU build" in detail(cpu_build, "cuda")
    old_driver = dataclasses.replace(GPU_MACHINE, driver="535.104.05", gpus=())
    assert "CUDA 13.0 does not run on driver 535.104.05" in detail(old_driver, "cuda")
    assert exit_code(diagnose(old_driver), strict=False) == 1


@pytest.mark.parametrize("shm_bytes, level", [(64 << 20, "fail"), (512 << 20, "warn"), (4 * GIB, "ok"), (None, "fail")])
def test_shared_memory(shm_bytes, level):
    facts = dataclasses.replace(CPU_MACHINE, shm_bytes=shm_bytes)
    assert levels(facts)["shm"] == level
    if shm_bytes == 64 << 20:
        assert "--shm-size=4g" in detail(facts, "shm")


def test_uncached_gated_weights_fail_without_a_token_and_warn_with_one():
    without = dataclasses.replace(GPU_MACHINE, hub_token=False, weights_problem=UNCACHED)
    assert levels(without)["weights"] == "fail" and "HF_TOKEN" in detail(without, "weights")
    with_token = dataclasses.replace(GPU_MACHINE, weights_problem=UNCACHED)
    assert levels(with_token)["weights"] == "warn" and "downloads" in detail(with_token, "weights")


def test_no_tritonserver_fails():
    assert levels(dataclasses.replace(CPU_MACHINE, triton=None))["triton"] == "fail"


def doctor(*args, **environment):
    return subprocess.run([sys.executable, "-m", "svd_triton", "doctor", *args], capture_output=True, text=True,
                          env={**os.environ, **environment}, timeout=120)


def test_the_command_on_this_machine_reports_json_and_matching_exit_codes():
    run = doctor("--json")
    report = json.loads(run.stdout)
    names = [check["name"] for check in report["checks"]]
    assert names[:3] == ["python", "triton", "torch"] and "shm" in names and names[-1] == "weights"
    assert run.returncode == report["exit_code"]
    strict = doctor("--json", "--strict")
    found = {check["level"] for check in report["checks"]}
    assert strict.returncode == (1 if "fail" in found else 2 if "warn" in found else 0)


def test_a_broken_weights_folder_fails_the_command_naming_it(tmp_path):
    run = doctor(SVD_MODEL_SOURCE=str(tmp_path))
    assert run.returncode == 1
    line = next(line for line in run.stdout.splitlines() if "weights" in line)
    assert line.startswith("fail") and str(tmp_path) in line


def test_serve_with_doctor_starts_nothing_when_a_check_warns():
    """`serve --doctor` is `doctor --strict` first: without a GPU the gpu check warns, so exit 2."""
    run = subprocess.run([sys.executable, "-m", "svd_triton", "serve", "--doctor"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2
    assert "warn  gpu" in run.stderr and "not started: doctor exit code 2" in run.stderr
    assert "starting tritonserver" not in run.stderr
