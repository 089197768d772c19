"""perf_analyzer against the svd_xt model: locating the tool, its input files, one run's CSV.

perf_analyzer comes from the tritonclient 2.51.0 wheel, installed with --no-deps into
<venv>/tools (it pins an old protobuf); the shared libraries it needs (libb64, libcudart) are
linked from the copies bundled in the nvidia-pytriton wheel, so no system package is required.

    python -m benchmarks.perf --write-inputs   # regenerate benchmarks/inputs/*.json from the sample image
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ROOT / "benchmarks" / "inputs"
SAMPLE = ROOT / "src" / "svd_triton" / "data" / "sample.png"
# Representative requests: the SVD-XT default, a fast preview, and the tiny CPU demo size.
REQUESTS = {
    "xt": {},
    "preview": {"WIDTH": 512, "HEIGHT": 288, "NUM_FRAMES": 14, "NUM_INFERENCE_STEPS": 10},
    "tiny": {"WIDTH": 128, "HEIGHT": 128, "NUM_FRAMES": 8, "NUM_INFERENCE_STEPS": 4},
}
LIBRARIES = {"libb64.so.0d": "libb64-", "libcudart.so.12": "libcudart-"}


def input_data(scalars: dict[str, int]) -> dict:
    """A perf_analyzer --input-data document: the sample image and `scalars`. BYTES data is base64 of the
    serialized element: a little-endian length, then the bytes."""
    image = SAMPLE.read_bytes()
    entry = {"IMAGE_BYTES": {"b64": base64.b64encode(struct.pack("<I", len(image)) + image).decode()},
             **{key: [value] for key, value in scalars.items()}}
    return {"data": [entry]}


def write_inputs() -> None:
    for name, scalars in REQUESTS.items():
        (INPUTS / f"{name}.json").write_text(json.dumps(input_data(scalars), indent=1) + "\n")


def perf_analyzer_binary() -> Path:
    binary = Path(sys.prefix) / "tools" / "bin" / "perf_analyzer"
    if not binary.is_file():
        raise SystemExit(f"perf_analyzer not found at {binary}: run `make setup-test` (it installs tritonclient==2.51.0 "
                         f"with --no-deps into {binary.parents[1]})")
    return binary


def library_folder() -> Path:
    """A folder of links named as perf_analyzer expects, to the libraries nvidia-pytriton bundles."""
    import pytriton

    bundled = Path(pytriton.__file__).resolve().parents[1] / "nvidia_pytriton.libs"
    folder = Path(sys.prefix) / "svd-triton" / "perf-libs"
    folder.mkdir(parents=True, exist_ok=True)
    for name, prefix in LIBRARIES.items():
        [source] = sorted(bundled.glob(prefix + "*"))
        link = folder / name
        link.unlink(missing_ok=True)
        link.symlink_to(source)
    return folder


def run(url: str, protocol: str, input_file: Path, concurrency: str, requests: int, csv_path: Path,
        token: str | None = None, stability: int = 50, timeout: float = 900) -> list[dict]:
    """One perf_analyzer run in count-window mode (time windows never settle with multi-second requests)."""
    command = [str(perf_analyzer_binary()), "-m", "svd_xt", "-u", url, "-i", protocol,
               "--input-data", str(input_file), "--concurrency-range", concurrency,
               "--measurement-mode", "count_windows", "--measurement-request-count", str(requests),
               "--stability-percentage", str(stability), "-f", str(csv_path)]
    if token:
        header = "authorization" if protocol == "http" else "triton-grpc-protocol-authorization"
        command += ["-H", f"{header}:Bearer {token}"]
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(library_folder()),
                                                                          os.environ.get("LD_LIBRARY_PATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    with open(csv_path) as rows:
        return list(csv.DictReader(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-inputs", action="store_true")
    if parser.parse_args().write_inputs:
        write_inputs()
