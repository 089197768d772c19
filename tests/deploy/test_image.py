"""The Docker images' install steps, checked without Docker: the Python the Dockerfile assumes is the one its
base image ships, and pip's resolver finds wheels for everything each stage installs, for that Python
and platform (PyPI must be reachable)."""
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.support.deploy_files import Stage, dockerfile_stages, image_requirements


@dataclass(frozen=True)
class BaseImage:
    python: str
    glibc: tuple[int, int]


@dataclass(frozen=True)
class TritonImage(BaseImage):
    triton: str
    ubuntu: str
    cuda: str


# What each nvcr.io/nvidia/tritonserver:<release>-py3 image ships: the one place for these facts. Triton,
# Ubuntu, Python and CUDA from NVIDIA's release notes for the container (docs.nvidia.com/deeplearning/
# triton-inference-server/release-notes/rel-24-10.html, rel-24-12.html, rel-26-08.html) and the server
# repository's release branches (TRITON_VERSION and build.py on r24.10, r24.12, r26.08); glibc is that
# Ubuntu's libc6 (jammy 2.35, noble 2.39). No image can be pulled here to read them.
TRITON_IMAGES = {
    "24.10": TritonImage(triton="2.51.0", ubuntu="22.04", python="3.10", cuda="12.6.2", glibc=(2, 35)),
    "24.12": TritonImage(triton="2.53.0", ubuntu="24.04", python="3.12", cuda="12.6.3", glibc=(2, 39)),
    "26.08": TritonImage(triton="2.72.0", ubuntu="24.04", python="3.12", cuda="13.4.1", glibc=(2, 39)),
}
# The gateway stage's base, Docker's official Python image: the tag names the Python and the Debian release
# (bookworm = Debian 12, whose libc6 is 2.36).
PYTHON_IMAGES = {"python:3.12-slim-bookworm": BaseImage(python="3.12", glibc=(2, 36))}


def manylinux_platforms(glibc: tuple[int, int]) -> list[str]:
    """pip takes --platform literally, so every manylinux tag a glibc of that version runs."""
    tags = [f"manylinux_2_{minor}_x86_64" for minor in range(glibc[1], 4, -1)]
    return tags + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def resolve(requirements: list[str], image: BaseImage, target, *options: str) -> subprocess.CompletedProcess:
    """pip's resolver, as a dry run, for the image's Python and platform, wheels only. Local pip configuration
    is ignored (PyPI only). torch comes from PyPI too: PyTorch's own index is not reachable here, and PyPI's
    Linux wheel of the pinned torch is the build for the CUDA checked below. fast-deps reads each
    wheel's METADATA with range requests where an index serves no PEP 658 metadata (the mirror here: 15 s),
    instead of downloading GBs of CUDA wheels."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    platforms = [option for tag in manylinux_platforms(image.glibc) for option in ("--platform", tag)]
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--report", "-", "--ignore-installed",
         "--no-cache-dir", "--use-feature=fast-deps", "--only-binary=:all:", "--python-version", image.python,
         *platforms, "--target", str(target), *options, *requirements],
        capture_output=True, text=True, env=environment, timeout=600)


def installed_torch(version: str, folder: Path) -> str:
    """torch as the image's first install step leaves it for the second (`pip install "./[engine]"
    torch==...`): a metadata-only wheel of that version. Its own dependencies (CUDA's wheels) are resolved
    by the first step's check, with --no-deps: this machine's package mirror lacks NVIDIA's CUDA 13 wheels
    (nvidia-cudnn-cu13 is a 0.0.0a0 placeholder there), which a real index has."""
    wheel = folder / f"torch-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"torch-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        archive.writestr(f"torch-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"torch-{version}.dist-info/RECORD", "")
    return f"torch @ {wheel.as_uri()}"


def unresolved(done: subprocess.CompletedProcess) -> str:
    """pip's own account of what did not resolve (it names the package)."""
    return "\n".join(line for line in done.stderr.splitlines() if not line.startswith("WARNING")).strip()


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return dockerfile_stages()


@pytest.fixture(scope="module")
def dockerfile(stages) -> Stage:
    """The Triton image (the file's last stage, what a plain `docker build` makes)."""
    assert list(stages)[-1] == "triton"
    return stages["triton"]


def base_image(stage: Stage) -> BaseImage:
    if stage.base in PYTHON_IMAGES:
        return PYTHON_IMAGES[stage.base]
    repository, _, tag = stage.base.partition(":")
    assert repository == "nvcr.io/nvidia/tritonserver" and tag.endswith("-py3"), stage.base
    return TRITON_IMAGES[tag.removesuffix("-py3")]


def test_the_dockerfile_assumes_the_python_and_cuda_its_base_image_ships(dockerfile):
    image = base_image(dockerfile)
    assert dockerfile.args["PYTHON_VERSION"] == image.python
    assert any("sys.version" in run and f"'{image.python}." in run for run in dockerfile.runs)  # the build checks it
    assert image.cuda.split(".")[0] == "13"  # the driver floor docs/deployment.md states (580) is CUDA 13's


def test_torch_is_built_for_a_cuda_the_image_runs(dockerfile, tmp_path):
    """The image's first install step: the pinned torch has a wheel for the image's Python and platform, and
    PyPI's build of it (the one the index in TORCH_INDEX serves too) needs a CUDA of the image's major
    version and no newer minor (CUDA's minor-version compatibility)."""
    image = base_image(dockerfile)
    done = resolve([f"torch=={dockerfile.args['TORCH_VERSION']}"], image, tmp_path, "--no-deps")
    assert done.returncode == 0, f"no torch wheel for Python {image.python}:\n{unresolved(done)}"
    (torch,) = json.loads(done.stdout)["install"]
    toolkit = next(r for r in map(Requirement, torch["metadata"]["requires_dist"]) if r.name == "cuda-toolkit")
    built_for = tuple(int(part) for part in str(toolkit.specifier).removeprefix("==").split(".")[:2])
    runs = tuple(int(part) for part in image.cuda.split(".")[:2])
    assert built_for[0] == runs[0] and built_for[1] <= runs[1], f"torch needs CUDA {toolkit.specifier}, the image has {image.cuda}"
    assert dockerfile.args["TORCH_INDEX"].endswith(f"/cu{built_for[0]}{built_for[1]}"), "TORCH_INDEX serves another CUDA"


def test_the_requirements_are_read_from_the_dockerfile_and_pyproject(dockerfile):
    requirements = image_requirements(dockerfile)
    torch_pin = f"torch=={dockerfile.args['TORCH_VERSION']}"
    assert requirements.count(torch_pin) == 2  # torch's own step, and again beside the engine
    assert "numpy<2" in requirements and any(Requirement(r).name == "diffusers" for r in requirements)
    assert not any("pytriton" in r or r.startswith("svd-triton") for r in requirements)  # engine only, expanded


def test_the_image_install_step_resolves_for_its_python_and_platform(dockerfile, tmp_path):
    image = base_image(dockerfile)
    version = dockerfile.args["TORCH_VERSION"]
    done = resolve([*image_requirements(dockerfile), installed_torch(version, tmp_path)], image, tmp_path / "target")
    assert done.returncode == 0, f"pip cannot install the image's requirements for Python {image.python}:\n" \
                                 f"{unresolved(done)}"
    installed = {item["metadata"]["name"].lower(): item["metadata"] for item in json.loads(done.stdout)["install"]}
    assert installed["torch"]["version"] == version
    assert Version(installed["numpy"]["version"]) < Version("2")


def test_the_resolution_check_rejects_the_old_python_3_10_base(dockerfile, tmp_path):
    torch = installed_torch(dockerfile.args["TORCH_VERSION"], tmp_path)
    done = resolve([*image_requirements(dockerfile), torch], TRITON_IMAGES["24.10"], tmp_path / "target")
    assert done.returncode != 0  # diffusers 0.42 and torch 2.15 both need Python 3.11 or newer
    assert any(f"No matching distribution found for {name}" in unresolved(done) for name in ("diffusers", "torch"))


def test_the_gateway_image_install_step_resolves_without_torch(stages, tmp_path):
    gateway = stages["gateway"]
    image = base_image(gateway)
    requirements = image_requirements(gateway)
    assert any(Requirement(r).name == "fastapi" for r in requirements) and "psycopg[binary]>=3.1" in requirements
    done = resolve(requirements, image, tmp_path)
    assert done.returncode == 0, f"pip cannot install the gateway image's requirements for Python {image.python}:\n" \
                                 f"{unresolved(done)}"
    installed = {item["metadata"]["name"].lower() for item in json.loads(done.stdout)["install"]}
    assert {"fastapi", "uvicorn", "sqlalchemy", "psycopg-binary", "tritonclient"} <= installed
    assert not {"torch", "diffusers"} & installed and not any(name.startswith("nvidia-") for name in installed)
