"""The GPU session kit, rehearsed here so that a lent GPU window is never spent on an import error.

The wheels `make gpu-wheels` carries are checked against the device machine's package list and the
tool's limits; then scripts/gpu_session.sh, the device command itself, runs with those wheels in a
venv of the device's package versions (numpy 2, transformers 5; torch's CPU build), `--size tiny`,
and the table it writes is read back.
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
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from benchmarks import gpu_session, gpu_wheels

ROOT = Path(__file__).resolve().parents[2]
REHEARSAL_VENV = Path(sys.prefix) / "device-rehearsal"
"""Built once per version set (gpu_wheels.rehearsal_environment), inside the test venv."""
DEVICE_CALL_MAX_CHARS = 2000


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("whl")
    gpu_wheels.prepare(folder)
    return folder


def test_the_wheels_carry_all_the_device_lacks_and_fit_one_call(wheels):
    names = {canonicalize_name(gpu_wheels.wheel_metadata(wheel)["Name"]) for wheel in wheels.glob("*.whl")}
    assert names == {*gpu_wheels.CARRIED, "svd-triton"}
    assert gpu_wheels.unmet_requirements(wheels) == []
    assert gpu_wheels.travelling_bytes(wheels) < gpu_wheels.TRAVEL_LIMIT


def test_the_carried_pins_are_in_pyprojects_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(line) for group in [project["dependencies"], *project["optional-dependencies"].values()]
                for line in group]
    for name, version in gpu_wheels.CARRIED.items():
        ranges = [r.specifier for r in declared if canonicalize_name(r.name) == name]
        assert ranges and all(specifier.contains(version) for specifier in ranges), (name, version, ranges)


def test_the_device_call_fits_the_tool():
    call = gpu_wheels.DEVICE_RUN
    assert len(call["command"]) <= DEVICE_CALL_MAX_CHARS and (ROOT / call["command"].split()[-1]).is_file()
    ignored = subprocess.run(["git", "check-ignore", "-q", *call["carry"]], cwd=ROOT)
    assert ignored.returncode == 0, "the device tool carries only ignored paths by name"


@pytest.mark.slow
def test_the_session_rehearses_on_the_cpu_with_the_devices_packages(wheels, tmp_path):
    python = gpu_wheels.rehearsal_environment(REHEARSAL_VENV)
    versions = subprocess.run([python, "-c", "import numpy, transformers; print(numpy.__version__, transformers.__version__)"],
                              check=True, capture_output=True, text=True).stdout.split()
    assert versions == [gpu_wheels.REHEARSAL_VERSIONS["numpy"], gpu_wheels.REHEARSAL_VERSIONS["transformers"]]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": str(python), "WHEELS": str(wheels), "SITE": str(tmp_path / "site"), "OUT": str(out)}
    env.pop("PYTHONPATH", None)
    steps = 4  # every row runs: the budget that cuts rows short in a GPU window is no test of a busy CPU
    done = subprocess.run(["bash", "scripts/gpu_session.sh", "--size", "tiny", "--device", "cpu", "--dtype", "float32", "--steps", str(steps),
                           "--set", "compile_backend=eager", "--budget", "86400"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    rows = json.loads((out / "rows.json").read_text())
    variants = gpu_session.variants("float32")
    assert [row["variant"]["name"] for row in rows] == [variant.name for variant in variants]
    expected = ["measured", "measured", "measured", "measured", "failed: ModelLoadError: fp8=true needs a CUDA GPU"]
    assert [row["status"][:len(status)] for row, status in zip(rows, expected)] == expected
    for row in rows:
        if row["status"] != "measured":
            continue
        numbers = row["row"]
        assert set(numbers["phases"]) == {"preparing", "denoising", "decoding", "encoding"}
        assert all(seconds > 0 for seconds in numbers["phases"].values())
        assert len(numbers["steps"]) == steps - 1 and all(seconds > 0 for seconds in numbers["steps"])
        assert numbers["e2e"][0] >= sum(numbers["phases"].values()) > 0
        assert row["variant"]["stock"] or 0 <= numbers["max_diff"] <= 255
    assert [row["compile_seconds"] is not None for row in rows[1:4]] == [True, False, True]  # caching reuses the engine

    page = (out / "benchmarks.md").read_text()
    table = [line for line in page.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(variants)
    assert all(line.startswith(f"| {variant.name} |") for line, variant in zip(table[1:], variants))
    assert all(line.count("|") == table[0].count("|") for line in table)

    doc = tmp_path / "benchmarks.md"
    shutil.copy(ROOT / "docs" / "benchmarks.md", doc)
    gpu_session.main(["--publish", str(out), "--doc", str(doc)])
    published = doc.read_text()
    assert re.search(r"<!-- gpu-session-cpu-tiny:start -->.*<!-- gpu-session-cpu-tiny:end -->", published, re.S)
    assert "<!-- fast-path-cuda-xt:start -->" in published and table[1] in published
