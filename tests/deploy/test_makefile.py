"""The README's first command stays lean: `make demo` installs the package and its server extra only, and
the browser, the database and the test extra come with `make test` (read from `make -n` on a fresh VENV,
so nothing is installed)."""
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_TOOLS = ("apt-get", "chromium", "postgresql", '".[test]"', "tritonclient==")


def planned_commands(target: str, venv: Path) -> str:
    """What `make TARGET` would run on a machine with no environment yet."""
    return subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout


def test_the_demo_installs_the_server_and_none_of_the_test_tools(tmp_path):
    commands = planned_commands("demo", tmp_path / "venv")
    assert '-e ".[server]"' in commands and "svd-triton demo" in commands
    assert [tool for tool in TEST_TOOLS if tool in commands] == []


@pytest.mark.parametrize("tool", TEST_TOOLS)
def test_the_tests_install_each_test_tool(tmp_path, tool):
    assert tool in planned_commands("test", tmp_path / "venv")


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_either_installer_installs_torch_first_then_the_package(tmp_path, installer):
    commands = subprocess.run(["make", "-n", "setup", f"VENV={tmp_path / 'venv'}", f"INSTALLER={installer}"], cwd=ROOT,
                              check=True, capture_output=True, text=True).stdout
    tool = f"{tmp_path / 'venv'}/bin/uv pip install" if installer == "uv" else "-m pip install"
    installs = [line for line in commands.splitlines() if tool in line and ('"torch==' in line or '".[server]"' in line)]
    assert len(installs) == 2 and '"torch==' in installs[0] and '-e ".[server]"' in installs[1]
