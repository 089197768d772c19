"""The GPU benchmark kit's wheels: what the GPU box lacks, prepared on a machine with network access.

    python -m benchmarks.gpu_wheels           # (make gpu-wheels) fill .whl/, check it, print the command for the box

The GPU box (benchmarks/gpu_box_packages.txt: its Python 3.12 and packages, torch 2.11 for CUDA 13,
transformers 5.x, numpy 2.x, no diffusers) reaches no package index, so `scripts/gpu_session.sh`
installs only what is in `.whl/` (ignored by git), copied to the box beside the checkout: diffusers and
the few packages it lacks, this project as a wheel, and torchao for the FP8 row. Everything else comes
from the box. The same package list builds the CPU rehearsal's environment (`rehearsal_environment`),
so an import error shows up here, not on the GPU box.
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
BOX_PACKAGES = ROOT / "benchmarks" / "gpu_box_packages.txt"
"""What the GPU box's image ships: its python3's version and every distribution installed for it."""


def read_box_packages(path: Path = BOX_PACKAGES) -> tuple[str, dict[str, str | None]]:
    """(the box's full Python version, {canonical name: version, or None where only the name is listed})
    from `path`: one `name==version` or `name` a line, `#` comments, `python==VERSION` the interpreter."""
    python, packages = None, {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = (part.strip() for part in line.partition("=="))
        if not name or (_ and not version):
            raise ValueError(f"{path}:{number}: expected `name` or `name==version`, got {line!r}")
        if name.lower() == "python":
            python = version
        else:
            packages[canonicalize_name(name)] = version or None
    if not python:
        raise ValueError(f"{path}: no `python==VERSION` line")
    return python, packages


BOX_PYTHON_FULL, _BOX = read_box_packages()
BOX_PYTHON = ".".join(BOX_PYTHON_FULL.split(".")[:2])
"""The box's python3, major.minor: the wheels are downloaded for it."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
BOX_PACKAGES_INSTALLED = frozenset(_BOX)
"""Every distribution the box's image holds."""
BOX_VERSIONS = {name: version for name, version in _BOX.items() if version}
"""The versions the package list gives (the rest are on the box at a version not listed)."""
ENGINE_PACKAGES = ("torch", "transformers", "numpy", "huggingface-hub", "tokenizers", "safetensors", "accelerate")
"""The box's packages the engine imports, pinned at the box's versions in the CPU rehearsal."""
CARRIED = {
    "diffusers": "0.42.1",  # the range pyproject.toml pins (svd_engine.pipeline overrides its private methods)
    "imageio-ffmpeg": "0.7.0",  # the ffmpeg the video encoder runs (x264, VP9, WebP); 0.8's wheel is 65 MiB, over the size limit
    "torchao": "0.17.0",  # the FP8 row; 0.17 is built against torch 2.11
}
"""What the box lacks, by pinned version; this project's own wheel is built besides."""
NOT_CARRIED = {"importlib-metadata": "diffusers falls back to the standard library's importlib.metadata"}
"""Requirements of the wheels in .whl/ that the box does without (the rehearsal runs without them too)."""
REHEARSAL_VERSIONS = {**{name: BOX_VERSIONS[name] for name in ENGINE_PACKAGES}, "torch": "2.13.0", "numpy": "2.4.6"}
"""The rehearsal's versions: the box's, but torch's CPU build of this machine's venv, and the last
numpy 2 for this machine's Python 3.11 (numpy 2.5 needs 3.12)."""
REHEARSAL_UNPINNED = ("pillow", "psutil", "requests", "regex", "filelock", "imageio")
"""Packages of the box's image that the engine and the wheels use, at whatever version pip picks."""
SIZE_LIMIT = 64 * 1024 ** 2
"""What the kit keeps the checkout plus .whl/ under, so that both copy to the box as one small transfer."""
BOX_COMMAND = "bash scripts/gpu_session.sh"
"""The one command to run on the box, in the checkout with .whl/ beside it (`make gpu-session`). It stops
starting rows at its --budget (450 s), so it ends within about 9 minutes."""
BOX_EXTRAS = (".whl",)
"""What the box needs besides the checkout's files: paths git ignores, copied over by name."""


def pip(*args: str, python: str = sys.executable) -> None:
    subprocess.run([python, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def download(folder: Path) -> None:
    """The pinned wheels for the box's Python and platform, none of their dependencies."""
    platforms = [option for platform in PLATFORMS for option in ("--platform", platform)]
    pip("download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", BOX_PYTHON,
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
    """Empty `folder` of wheels, then download the pinned ones (CARRIED) and build this project's."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.whl"):
        old.unlink()  # one version of each: two would stop the box's install
    download(folder)
    build_project_wheel(folder)
    (folder / "COMMIT").write_text(source_commit("--dirty"))  # the table's "commit" there, where the tree has no .git
    return sorted(folder.glob("*.whl"))


def wheel_metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode())


def unmet_requirements(folder: Path) -> list[str]:
    """What a wheel in `folder` (this project's aside: only its engine runs there) requires that the
    GPU box neither has (at a known version that fits) nor gets from `folder`."""
    environment = {"python_version": BOX_PYTHON, "python_full_version": BOX_PYTHON_FULL, "sys_platform": "linux",
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
            version = carried.get(name) or BOX_VERSIONS.get(name)
            if name not in carried and name not in BOX_PACKAGES_INSTALLED and name not in NOT_CARRIED:
                problems.append(f"{wheel.name} requires {line}: not on the GPU box and not in the wheels")
            elif version and not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{wheel.name} requires {line}: {name} {version} is what the GPU box gets")
    return problems


def travelling_bytes(folder: Path = WHEELS) -> int:
    """What goes to the box: the checkout's tracked and untracked-not-ignored files, plus the wheels."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    tree = sum((ROOT / name).stat().st_size for name in listed if name and (ROOT / name).is_file())
    return tree + sum(wheel.stat().st_size for wheel in folder.glob("*.whl"))


def rehearsal_environment(venv: Path) -> Path:
    """A venv holding the GPU box's engine packages at its versions (REHEARSAL_VERSIONS) and nothing
    the box lacks (what their dependencies pull in beyond its package list is removed again); built
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
    foreign = sorted({canonicalize_name(item["name"]) for item in json.loads(listed)} - BOX_PACKAGES_INSTALLED)
    if foreign:  # newer releases here than there need more (typer → pydantic): the box runs without them
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
    parser.add_argument("--folder", type=Path, default=WHEELS, help="where the wheels go (copy .whl/ to the box beside the checkout)")
    args = parser.parse_args(argv)
    wheels = prepare(args.folder)
    problems = unmet_requirements(args.folder)
    size = travelling_bytes(args.folder)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 1024 ** 2:7.1f} MiB  {wheel.name}")
    print(f"checkout + wheels: {size / 1024 ** 2:.1f} MiB of the kit's {SIZE_LIMIT // 1024 ** 2} MiB")
    if problems or size >= SIZE_LIMIT:
        sys.exit("\n".join(problems + ([f"too large to copy to the box: {size} bytes"] if size >= SIZE_LIMIT else [])))
    print(f"copy the checkout with {', '.join(BOX_EXTRAS)} to the GPU box, then run there (the table goes to $OUT, "
          f"else out/gpu-session):\n    {BOX_COMMAND}\n"
          "then, here: python -m benchmarks.gpu_session --publish DIR   # DIR: the folder holding the box's benchmarks.md")


if __name__ == "__main__":
    main()
