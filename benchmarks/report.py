"""Writing a benchmark's table into its own section of docs/benchmarks.md, with how it was made."""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
REPOSITORY = ROOT / "model_repository"


def environment() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    device = f"CPU: {cpu}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip().splitlines() if shutil.which("nvidia-smi") else []
        device = f"{torch.cuda.get_device_name()} (driver {driver[0] if driver else 'unknown'}, CUDA {torch.version.cuda})"
    commit = os.environ.get("SOURCE_COMMIT") or source_commit()
    try:
        from diffusers import __version__ as diffusers_version
    except ImportError:
        diffusers_version = "not installed"
    return (f"{device}; Python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers_version}; "
            f"commit {commit or 'unknown'}")


def source_commit(*describe: str) -> str:
    """This checkout's short commit ('' without git or .git, as in a copied tree; SOURCE_COMMIT then says
    it); `describe` options, e.g. --dirty, ask `git describe` instead."""
    if not shutil.which("git"):
        return ""
    command = ["git", "describe", "--always", "--abbrev=7", *describe] if describe else ["git", "rev-parse", "--short", "HEAD"]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT).stdout.strip()


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, title: str, body: str, doc: Path | None = None) -> None:
    """Replace (or append) the section `name` of `doc` (docs/benchmarks.md); other sections stay as they are."""
    doc = doc or DOC
    module = ".".join(Path(sys.argv[0]).resolve().relative_to(ROOT).with_suffix("").parts)
    command = " ".join(["python -m", module] + sys.argv[1:])
    section = (f"<!-- {name}:start -->\n## {title}\n\n{body}\n\n"
               f"Measured on {environment()}.\nCommand: `{command}`\n<!-- {name}:end -->")
    put_section(name, section, doc)


def put_section(name: str, section: str, doc: Path) -> None:
    """Replace the section `name` of `doc` with `section` (markers included), or append it."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nEach section is written by the command it names.\n"
    pattern = re.compile(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def copy_section(source: Path, prefix: str, doc: Path | None = None) -> list[str]:
    """Copy each section of `source` whose name starts with `prefix` into `doc` as it is (a table
    measured on another machine keeps its own "Measured on" line); returns the names copied."""
    found = re.finditer(rf"<!-- ({re.escape(prefix)}[\w.-]*):start -->.*?<!-- \1:end -->", source.read_text(), re.S)
    names = []
    for match in found:
        put_section(match[1], match[0], doc or DOC)
        names.append(match[1])
    if not names:
        raise ValueError(f"{source} holds no section named {prefix}…")
    return names
