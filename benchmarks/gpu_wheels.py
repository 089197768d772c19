"""The GPU session kit's wheels: what the lent GPU machine lacks, prepared here, carried with the tree.

    python -m benchmarks.gpu_wheels           # (make gpu-wheels) fill .whl/, check it, print the device call

The device machine (the device tool's KINDS.md) has its own Python 3.12 and packages (torch 2.11 for
CUDA 13, transformers 5.x, numpy 2.x) and reaches no registry, so `scripts/gpu_session.sh` installs
only what is carried in `.whl/` (ignored by git): diffusers and the few packages it lacks, this project
as a wheel, and torchao for the FP8 row. Everything else comes from the machine. The same description
of that machine builds the CPU rehearsal's environment (`rehearsal_environment`), so an import error
shows up here, not in a GPU window.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from benchmarks.report import ROOT, source_commit

WHEELS = ROOT / ".whl"
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
DEVICE_VERSIONS = {
    "torch": "2.11.0", "transformers": "5.17.0", "numpy": "2.5.2", "huggingface-hub": "1.33.0",
    "tokenizers": "0.23.2", "safetensors": "0.8.0", "accelerate": "1.15.0",
}
"""Versions read on the device machine (KINDS.md's pip list, 2026-11) of the packages the engine uses."""
DEVICE_PACKAGES = frozenset(canonicalize_name(name) for name in """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp""".split())
"""Every package the device machine's image holds (KINDS.md, read 2026-11-17)."""
CARRIED = {
    "diffusers": "0.42.1",  # the range pyproject.toml pins (svd_engine.pipeline overrides its private methods)
    "imageio-ffmpeg": "0.7.0",  # the ffmpeg the video encoder runs (x264, VP9, WebP); 0.8's wheel is 65 MiB, over the limit
    "torchao": "0.17.0",  # the FP8 row; 0.17 is built against torch 2.11
}
"""What the device machine lacks, by pinned version; this project's own wheel is built besides."""
NOT_CARRIED = {"importlib-metadata": "diffusers falls back to the standard library's importlib.metadata"}
"""Requirements of carried wheels that the device does without (the rehearsal runs without them too)."""
REHEARSAL_VERSIONS = {**DEVICE_VERSIONS, "torch": "2.13.0", "numpy": "2.4.6"}
"""The rehearsal's versions: the device's, but torch's CPU build of this machine's venv, and the last
numpy 2 for this machine's Python 3.11 (numpy 2.5 needs 3.12)."""
REHEARSAL_UNPINNED = ("pillow", "psutil", "requests", "regex", "filelock", "imageio")
"""Packages of the device's image that the engine and the carried wheels use, at whatever version pip picks."""
TRAVEL_LIMIT = 64 * 1024 ** 2
"""The device tool's limit on what one call carries: the tree plus the carried wheels."""
DEVICE_RUN = {"command": "bash scripts/gpu_session.sh", "carry": [".whl"], "timeout_s": 540}
"""The device tool's `run` call: the session stops starting rows at its --budget (450 s), well inside."""


def pip(*args: str, python: str = sys.executable) -> None:
    subprocess.run([python, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def download(folder: Path) -> None:
    """The pinned wheels for the device's Python and platform, none of their dependencies."""
    platforms = [option for platform in PLATFORMS for option in ("--platform", platform)]
    pip("download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", DEVICE_PYTHON,
        "--implementation", "cp", *platforms, "-d", str(folder), *(f"{name}=={version}" for name, version in CARRIED.items()))


def build_project_wheel(folder: Path) -> Path:
    """This checkout as a wheel, built from a copy so that no stale build/ folder leaks into it."""
    with tempfile.TemporaryDirectory(prefix="svd-wheel-") as scratch:
        source = Path(scratch) / "source"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, source / name)
        shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(folder), str(source))
    [wheel] = folder.glob("svd_triton-*.whl")
    return wheel


def prepare(folder: Path = WHEELS) -> list[Path]:
    """Empty `folder` of wheels, then download the carried ones and build this project's."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.whl"):
        old.unlink()  # one version of each: two would stop the device's install
    download(folder)
    build_project_wheel(folder)
    (folder / "COMMIT").write_text(source_commit("--dirty"))  # the table's "commit" there, where the tree has no .git
    return sorted(folder.glob("*.whl"))


def wheel_metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


def unmet_requirements(folder: Path) -> list[str]:
    """What a carried wheel (this project's aside: only its engine runs there) requires that the
    device machine neither has (at a known version that fits) nor gets carried."""
    environment = {"python_version": DEVICE_PYTHON, "python_full_version": DEVICE_PYTHON + ".3", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
                   "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    carried = {canonicalize_name(wheel_metadata(w)["Name"]): wheel_metadata(w)["Version"] for w in folder.glob("*.whl")}
    problems = []
    for wheel in sorted(folder.glob("*.whl")):
        metadata = wheel_metadata(wheel)
        if canonicalize_name(metadata["Name"]) == "svd-triton":
            continue
        for line in metadata.get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate(environment):
                continue
            name = canonicalize_name(requirement.name)
            version = carried.get(name) or DEVICE_VERSIONS.get(name)
            if name not in carried and name not in DEVICE_PACKAGES and name not in NOT_CARRIED:
                problems.append(f"{wheel.name} requires {line}: not on the device machine and not carried")
            elif version and not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{wheel.name} requires {line}: {name} {version} is what the device gets")
    return problems


def travelling_bytes(folder: Path = WHEELS) -> int:
    """What one device call carries: tracked and untracked-not-ignored files, plus the wheels."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    tree = sum((ROOT / name).stat().st_size for name in listed if name and (ROOT / name).is_file())
    return tree + sum(wheel.stat().st_size for wheel in folder.glob("*.whl"))


def rehearsal_environment(venv: Path) -> Path:
    """A venv holding the device machine's packages at its versions (REHEARSAL_VERSIONS) and nothing
    the machine lacks (what their dependencies pull in beyond its package list is removed again); built
    once per version set, then reused. Returns its python."""
    python = venv / "bin" / "python"
    marker = venv / "rehearsal.json"
    wanted = json.dumps([REHEARSAL_VERSIONS, REHEARSAL_UNPINNED], sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install(str(python), *REHEARSAL_UNPINNED, *(f"{name}=={version}" for name, version in REHEARSAL_VERSIONS.items()))
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], check=True, capture_output=True).stdout
    foreign = sorted({canonicalize_name(item["name"]) for item in json.loads(listed)} - DEVICE_PACKAGES)
    if foreign:  # newer releases here than there need more (typer → pydantic): the device runs without them
        pip("uninstall", "-q", "-y", *foreign, python=str(python))
    marker.write_text(wanted)
    return python


def install(python: str, *requirements: str) -> None:
    """Install into `python`'s environment with this venv's uv when it has one (`make setup`'s default
    installer; minutes faster for torch's wheel), else with pip. uv reads no pip configuration, so pip's
    find-links (where a machine keeps its CPU build of torch) is handed on, as the Makefile does."""
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        return pip("install", "-q", *requirements, python=python)
    find_links = os.environ.get("UV_FIND_LINKS") or os.environ.get("PIP_FIND_LINKS", "")
    subprocess.run([str(uv), "pip", "install", "-q", "--python", python, *requirements], check=True,
                   env={**os.environ, "UV_FIND_LINKS": find_links} if find_links else None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=WHEELS, help="where the wheels go (the device call carries .whl)")
    args = parser.parse_args(argv)
    wheels = prepare(args.folder)
    problems = unmet_requirements(args.folder)
    size = travelling_bytes(args.folder)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 1024 ** 2:7.1f} MiB  {wheel.name}")
    print(f"tree + wheels: {size / 1024 ** 2:.1f} MiB of the device call's {TRAVEL_LIMIT // 1024 ** 2} MiB")
    if problems or size >= TRAVEL_LIMIT:
        sys.exit("\n".join(problems + ([f"too large to carry: {size} bytes"] if size >= TRAVEL_LIMIT else [])))
    print("device tool call (a task with a GPU; then give_back):\n" + json.dumps(DEVICE_RUN))


if __name__ == "__main__":
    main()
