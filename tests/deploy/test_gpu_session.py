"""The GPU benchmark kit, rehearsed on the CPU so that a run on a GPU box never fails on an import error.

The wheels `make gpu-wheels` prepares are checked against the GPU box's package list
(benchmarks/gpu_box_packages.txt) and the kit's size limit; then scripts/gpu_session.sh, the box's
command itself, runs with those wheels in a venv of the box's package versions (numpy 2,
transformers 5; torch's CPU build), `--size tiny`, and the table it writes is read back.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from benchmarks import gpu_session, gpu_wheels
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REHEARSAL_VENV = Path(sys.prefix) / "device-rehearsal"
"""Built once per version set (gpu_wheels.rehearsal_environment), inside the test venv."""


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("whl")
    gpu_wheels.prepare(folder)
    return folder


def test_the_wheels_hold_all_the_box_lacks_and_stay_small(wheels):
    names = {canonicalize_name(gpu_wheels.wheel_metadata(wheel)["Name"]) for wheel in wheels.glob("*.whl")}
    assert names == {*gpu_wheels.CARRIED, "svd-triton"}
    assert gpu_wheels.unmet_requirements(wheels) == []
    assert gpu_wheels.travelling_bytes(wheels) < gpu_wheels.SIZE_LIMIT


def test_the_carried_pins_are_in_pyprojects_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(line) for group in [project["dependencies"], *project["optional-dependencies"].values()]
                for line in group]
    for name, version in gpu_wheels.CARRIED.items():
        ranges = [r.specifier for r in declared if canonicalize_name(r.name) == name]
        assert ranges and all(specifier.contains(version) for specifier in ranges), (name, version, ranges)


def test_the_box_command_exists_and_the_wheels_stay_out_of_git():
    assert (ROOT / gpu_wheels.BOX_COMMAND.split()[-1]).is_file()
    ignored = subprocess.run(["git", "check-ignore", "-q", *gpu_wheels.BOX_EXTRAS], cwd=ROOT)
    assert ignored.returncode == 0, "the wheels are copied to the box by name, never committed"


def test_the_box_package_list_reads_back():
    python, packages = gpu_wheels.read_box_packages()
    assert python.startswith("3.12.") and gpu_wheels.BOX_PYTHON == "3.12"
    assert packages["torch"].startswith("2.11.") and packages["numpy"].startswith("2.")
    assert packages["transformers"].startswith("5.")
    assert not set(gpu_wheels.CARRIED) & set(packages), "the wheels bring only what the box lacks"
    assert set(gpu_wheels.ENGINE_PACKAGES) <= set(gpu_wheels.BOX_VERSIONS)


def test_a_malformed_box_package_list_is_refused(tmp_path):
    listed = tmp_path / "packages.txt"
    listed.write_text("torch==2.11.0\n")
    with pytest.raises(ValueError, match="python==VERSION"):
        gpu_wheels.read_box_packages(listed)
    listed.write_text("python==3.12.3\ntorch==\n")
    with pytest.raises(ValueError, match=":2:"):
        gpu_wheels.read_box_packages(listed)


@pytest.mark.slow
def test_the_kit_rehearses_on_the_cpu_with_the_boxs_packages(wheels, tmp_path):
    python = gpu_wheels.rehearsal_environment(REHEARSAL_VENV)
    script = "import numpy, transformers; print(numpy.__version__, transformers.__version__)"
    versions = subprocess.run([python, "-c", script], check=True, capture_output=True, text=True).stdout.split()
    assert versions == [gpu_wheels.REHEARSAL_VERSIONS["numpy"], gpu_wheels.REHEARSAL_VERSIONS["transformers"]]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": str(python), "WHEELS": str(wheels), "SITE": str(tmp_path / "site"), "OUT": str(out)}
    env.pop("PYTHONPATH", None)
    steps = 4  # every row runs: the budget that cuts rows short on a GPU box is no test of a busy CPU
    done = subprocess.run(["bash", "scripts/gpu_session.sh", "--size", "tiny", "--device", "cpu", "--dtype", "float32",
                           "--steps", str(steps), "--set", "compile_backend=eager", "--budget", "86400"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    rows = json.loads((out / "rows.json").read_text())
    variants = gpu_session.variants("float32")
    assert [row["variant"]["name"] for row in rows] == [variant.name for variant in variants]
    presets = [row["variant"]["request"].get("preset") for row in rows]
    assert presets == [None] * 3 + ["balanced", "fast", "fast"] + [None] * 2
    expected = ["measured"] * 7 + ["failed: ModelLoadError: fp8=true needs a CUDA GPU"]
    assert [row["status"][:len(status)] for row, status in zip(rows, expected)] == expected
    measured = [row for row in rows if row["status"] == "measured"]
    # a preset's row times its whole request (its own steps, the last ones conditional-only); the others --steps
    assert [(row["steps"]["timed"]["count"], row["steps"]["timed"]["conditional"]) for row in measured] == [
        (steps, 0)] * 3 + [(15, 3), (10, 4), (10, 4)] + [(steps, 0)]
    # end to end is built for 25 steps, a preset's for its own: the request the timed run was
    assert [row["steps"]["request"]["count"] for row in measured] == [25] * 3 + [15, 10, 10] + [25]
    assert all(row["steps"]["request"] == row["steps"]["timed"] for row in measured[3:6])
    for row in measured:
        numbers = row["row"]
        assert set(numbers["phases"]) == {"preparing", "denoising", "decoding", "encoding"}
        assert all(seconds > 0 for seconds in numbers["phases"].values())
        assert len(numbers["steps"]) == row["steps"]["timed"]["count"] - 1
        assert all(seconds > 0 for seconds in numbers["steps"])
        assert numbers["e2e"][0] >= sum(numbers["phases"].values()) > 0
        assert row["variant"]["stock"] or 0 <= numbers["max_diff"] <= 255
    # caching and the presets are request fields of the engine loaded for the row above them: no compile
    assert [row["compile_seconds"] is not None for row in rows[1:7]] == [True, False, False, False, False, True]

    page = (out / "benchmarks.md").read_text()
    table = [line for line in page.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(variants)
    assert all(line.startswith(f"| {variant.name} |") for line, variant in zip(table[1:], variants))
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert f"| 25, {steps} timed |" in table[1] and "| 15 (12 guided + 3 conditional-only), all timed |" in table[4]
    assert "conditional-only" in table[5].split("|")[7] and "cached conditional-only" in table[6].split("|")[7]

    doc = tmp_path / "benchmarks.md"
    shutil.copy(ROOT / "docs" / "benchmarks.md", doc)
    gpu_session.main(["--publish", str(out), "--doc", str(doc)])
    published = doc.read_text()
    assert re.search(r"<!-- gpu-session-cpu-tiny:start -->.*<!-- gpu-session-cpu-tiny:end -->", published, re.S)
    assert "<!-- fast-path-cuda-xt:start -->" in published and table[1] in published
