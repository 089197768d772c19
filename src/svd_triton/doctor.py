"""`svd-triton doctor`: will this machine serve SVD-XT? Driver, CUDA, GPU memory and precision, /dev/shm,
weights and the Triton and Python versions, checked before a minutes-long load finds out.

The facts are gathered once (`gather`) and judged by `diagnose`, which reads nothing from the system,
so the judgement is tested with the facts of machines this one is not."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .launcher import CPU_CONFIG_NAME, ServerStartError, find_tritonserver, gpu_visible

GIB = 1 << 30
SVD_XT_GPU_BYTES = 20 * GIB
"""A full XT request (25 frames, 1024×576), weights included: the target in docs/deployment.md."""
WITH_TEXT_TO_IMAGE_GPU_BYTES = 24 * GIB
"""svd_xt plus text_to_image (SDXL-Turbo, about 7 GB more) on one GPU (docs/deployment.md)."""
SHM_MINIMUM_BYTES = 256 << 20
"""Below this the Python backend cannot hold a request's video (Docker's default is 64 MiB)."""
SHM_ADVISED_BYTES = 1 * GIB
"""The compose file and the chart give 4 GB; under 1 GiB concurrent requests can run out."""
BF16_CAPABILITY = (8, 0)
FP8_CAPABILITY = (8, 9)
MODEL_SOURCE = re.compile(r'key:\s*"model_source",\s*value:\s*\{\s*string_value:\s*"([^"]*)"')
BUILT_IN_SOURCES = ("tiny", "random-xt")
LEVELS = ("ok", "warn", "fail")


@dataclasses.dataclass(frozen=True)
class Gpu:
    name: str
    capability: tuple[int, int]
    free_bytes: int
    total_bytes: int


@dataclasses.dataclass(frozen=True)
class Facts:
    """What `diagnose` judges; `gather` reads it from this machine, tests write it by hand."""

    python: str
    triton: str | None
    """The tritonserver that `serve` runs and its release, None when there is none."""
    torch: str | None
    torch_cuda: str | None
    driver: str | None
    gpu_seen: bool
    """nvidia-smi lists a GPU (whether or not torch can use it)."""
    gpus: tuple[Gpu, ...]
    """The GPUs torch can use."""
    shm_bytes: int | None
    config_variant: str
    model_source: str
    hub_token: bool
    weights_problem: str | None
    """Why the weights cannot be loaded from model_source as they are here (None: they can)."""


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    level: str
    detail: str


def diagnose(facts: Facts) -> list[Check]:
    checks = [Check("python", "ok", facts.python)]
    checks.append(
        Check("triton", "ok", facts.triton)
        if facts.triton
        else Check(
            "triton",
            "fail",
            "no tritonserver on PATH and nvidia-pytriton is not installed: "
            "pip install 'svd-triton[server]' or run the Triton image",
        )
    )
    if facts.torch is None:
        checks.append(Check("torch", "fail", "torch is not installed: the engine needs it (make setup)"))
    else:
        cuda = f"CUDA {facts.torch_cuda}" if facts.torch_cuda else "a CPU build"
        checks.append(Check("torch", "ok", f"torch {facts.torch}, {cuda}"))
    checks += gpu_checks(facts)
    checks.append(shm_check(facts.shm_bytes))
    checks.append(weights_check(facts))
    return checks


def gpu_checks(facts: Facts) -> list[Check]:
    if not facts.gpu_seen:
        return [
            Check(
                "gpu",
                "warn",
                f"no GPU visible: `serve` uses the {CPU_CONFIG_NAME} config (built-in "
                "random-weight models); SVD-XT itself needs an NVIDIA GPU",
            )
        ]
    checks = [
        Check(
            "driver",
            "ok" if facts.driver else "warn",
            f"NVIDIA driver {facts.driver}" if facts.driver else "nvidia-smi did not report a driver version",
        )
    ]
    if not facts.gpus:
        reason = (
            f"torch {facts.torch} is a CPU build: install a CUDA build"
            if facts.torch_cuda is None
            else f"torch's CUDA {facts.torch_cuda} does not run on driver {facts.driver}: "
            "a newer driver or an older build"
        )
        return checks + [Check("cuda", "fail", f"nvidia-smi lists a GPU but torch cannot use it: {reason}")]
    gpu = max(facts.gpus, key=lambda each: each.free_bytes)
    memory = f"{gpu.name}: {gpu.free_bytes / GIB:.1f} of {gpu.total_bytes / GIB:.1f} GiB free"
    if gpu.free_bytes < SVD_XT_GPU_BYTES:
        checks.append(
            Check(
                "gpu memory",
                "fail",
                f"{memory}; a full XT request needs about {SVD_XT_GPU_BYTES // GIB} GiB, weights included",
            )
        )
    elif gpu.free_bytes < WITH_TEXT_TO_IMAGE_GPU_BYTES:
        checks.append(
            Check(
                "gpu memory",
                "warn",
                f"{memory}: enough for svd_xt, not for text_to_image beside it "
                f"({WITH_TEXT_TO_IMAGE_GPU_BYTES // GIB} GiB): serve --svd-only",
            )
        )
    else:
        checks.append(Check("gpu memory", "ok", memory))
    major, minor = gpu.capability
    if gpu.capability < BF16_CAPABILITY:
        checks.append(
            Check(
                "precision",
                "warn",
                f"compute capability {major}.{minor}: float16 only "
                f"(bfloat16 needs {BF16_CAPABILITY[0]}.{BF16_CAPABILITY[1]})",
            )
        )
    else:
        fp8 = "FP8 too" if gpu.capability >= FP8_CAPABILITY else "no FP8 (needs 8.9)"
        checks.append(Check("precision", "ok", f"compute capability {major}.{minor}: float16, bfloat16, {fp8}"))
    return checks


def shm_check(shm_bytes: int | None) -> Check:
    if shm_bytes is None:
        return Check("shm", "fail", "no /dev/shm: the Python backend passes tensors through it")
    size = f"/dev/shm holds {shm_bytes / GIB:.2f} GiB"
    if shm_bytes < SHM_MINIMUM_BYTES:
        return Check(
            "shm", "fail", f"{size}: too little for a video; docker run --shm-size=4g (or the chart's emptyDir)"
        )
    if shm_bytes < SHM_ADVISED_BYTES:
        return Check("shm", "warn", f"{size}: concurrent requests may run out; 4 GiB is what the deployments give")
    return Check("shm", "ok", size)


def weights_check(facts: Facts) -> Check:
    source = facts.model_source
    if source in BUILT_IN_SOURCES:
        return Check("weights", "ok", f"{source!r} ({facts.config_variant} config): built in process, random weights")
    if facts.weights_problem is None:
        return Check("weights", "ok", f"{source} ({facts.config_variant} config): complete")
    if (
        "/" in source
        and not source.startswith(("s3://", "/", "."))
        and "local Hugging Face cache" in facts.weights_problem
    ):
        if facts.hub_token:
            return Check(
                "weights", "warn", f"{source} is not cached: the first start downloads it (a hub token is set)"
            )
        return Check(
            "weights",
            "fail",
            f"{source} is not cached and no hub token is set: SVD-XT is gated on the hub; "
            "accept its terms and export HF_TOKEN, or give a folder or s3:// source",
        )
    return Check("weights", "fail", f"{source}: {facts.weights_problem}")


def exit_code(checks: list[Check], strict: bool) -> int:
    """0 ready; 1 a check failed; 2 only warnings, with --strict."""
    levels = {check.level for check in checks}
    if "fail" in levels:
        return 1
    return 2 if strict and "warn" in levels else 0


def report(checks: list[Check]) -> str:
    width = max(len(check.name) for check in checks)
    return "\n".join(f"{check.level:<4}  {check.name:<{width}}  {check.detail}" for check in checks)


def as_json(checks: list[Check], code: int) -> str:
    return json.dumps({"exit_code": code, "checks": [dataclasses.asdict(check) for check in checks]}, indent=2)


def gather(model_repository: Path, config: str) -> Facts:
    """This machine's facts; `config` as `serve --config` takes it (auto, cpu or default)."""
    seen = gpu_visible()
    torch_version = installed_version("torch")
    torch_cuda, gpus = probe_torch(seen) if torch_version else (None, ())
    variant = {"auto": "default" if seen else CPU_CONFIG_NAME}.get(config, config)
    source = os.environ.get("SVD_MODEL_SOURCE") or configured_source(model_repository, variant)
    return Facts(
        python=f"Python {platform.python_version()}",
        triton=triton_release(),
        torch=torch_version,
        torch_cuda=torch_cuda,
        driver=driver_version() if seen else None,
        gpu_seen=seen,
        gpus=gpus,
        shm_bytes=shutil.disk_usage("/dev/shm").total if Path("/dev/shm").is_dir() else None,
        config_variant=variant,
        model_source=source,
        hub_token=hub_token(),
        weights_problem=None if source in BUILT_IN_SOURCES else weights_problem(source),
    )


def configured_source(model_repository: Path, variant: str) -> str:
    folder = model_repository / "svd_xt"
    config = folder / "config.pbtxt" if variant == "default" else folder / "configs" / f"{variant}.pbtxt"
    found = MODEL_SOURCE.search(config.read_text(encoding="utf-8")) if config.is_file() else None
    if found is None:
        from svd_engine.config import DEFAULT_MODEL_SOURCE

        return DEFAULT_MODEL_SOURCE
    return found.group(1)


def triton_release() -> str | None:
    try:
        binary, backends = find_tritonserver()
    except ServerStartError:
        return None
    if backends is None:  # an NGC image sets its release in the environment
        return f"{binary} (Triton {os.environ.get('TRITON_SERVER_VERSION', 'release unknown')})"
    return f"embedded tritonserver from nvidia-pytriton {installed_version('nvidia-pytriton')}"


def hub_token() -> bool:
    """HF_TOKEN, or a token `huggingface-cli login` stored."""
    try:
        from huggingface_hub import get_token
    except ImportError:  # the thin client: no hub library
        return bool(os.environ.get("HF_TOKEN"))
    return get_token() is not None


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


TORCH_PROBE = """
import json, sys, torch
gpus = []
if sys.argv[1] == "gpu" and torch.cuda.is_available():
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        gpus.append([torch.cuda.get_device_name(index), list(torch.cuda.get_device_capability(index)), free, total])
print(json.dumps({"cuda": torch.version.cuda, "gpus": gpus}))
"""
"""Run in a child interpreter: the CLI stays torch-free (docs/architecture.md), and a torch whose CUDA
libraries fail to load is reported instead of taking the doctor down with it."""


def probe_torch(gpu_seen: bool) -> tuple[str | None, tuple[Gpu, ...]]:
    """torch's CUDA build and the GPUs it can use (asked only where nvidia-smi lists one)."""
    probe = subprocess.run(
        [sys.executable, "-c", TORCH_PROBE, "gpu" if gpu_seen else "cpu"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return None, ()
    found = json.loads(probe.stdout.splitlines()[-1])
    return found["cuda"], tuple(
        Gpu(name, tuple(capability), free, total) for name, capability, free, total in found["gpus"]
    )


def driver_version() -> str | None:
    listing = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
    )
    return listing.stdout.splitlines()[0].strip() if listing.returncode == 0 and listing.stdout.strip() else None


def weights_problem(source: str) -> str | None:
    from svd_engine.errors import ModelLoadError
    from svd_engine.sources import open_tree
    from svd_engine.weights import check_weights

    try:
        inspection = check_weights(open_tree(source), half=True)
    except ModelLoadError as error:
        return str(error)
    return None if inspection.ok else inspection.report()
