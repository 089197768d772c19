"""OpenAI's Videos API driven by the official `openai` Node SDK from npm, unchanged, against a real gateway +
real Triton (streaming variant, tiny model): create from a local image file, poll, download a decodable MP4,
extend by reference (the Node SDK's multipart sends `video[id]`, which the Python SDK cannot), and a refused
size raised as the SDK's BadRequestError naming the param.

The SDK is installed from the npm registry into the pytest cache, one folder per pinned version, once; when
npm cannot install it the test fails saying so (nothing is skipped)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import TOKEN
from tests.support.videos import decode_video, max_abs_diff

OPENAI_NODE = "7.60.0"
"""The npm `openai` release the test installs (the newest when written; docs/gateway.md names it)."""
SCRIPT = Path(__file__).parents[1] / "support" / "openai_node_video.cjs"


@pytest.fixture(scope="module")
def node_modules(request) -> Path:
    """node_modules holding openai@OPENAI_NODE, installed from the registry on first use."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        pytest.fail("Node.js and npm are needed on PATH (Debian's or NodeSource's nodejs)")
    folder = request.config.cache.mkdir(f"npm-openai-{OPENAI_NODE}")
    installed = folder / "node_modules" / "openai" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != OPENAI_NODE:
        done = subprocess.run([npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund",
                               "--loglevel=error", f"openai@{OPENAI_NODE}"], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"npm could not install openai@{OPENAI_NODE} from its registry "
                        f"(exit {done.returncode}):\n{done.stderr[-2000:]}")
    return folder / "node_modules"


def test_node_sdk_creates_downloads_and_extends_a_video(node_modules, gateway, tmp_path, sample_png):
    image = tmp_path / "photo.png"
    image.write_bytes(sample_png)
    run = subprocess.run(["node", str(SCRIPT), f"{gateway.url}/v1", str(image), str(tmp_path)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "NODE_PATH": str(node_modules),
                                                      "SVD_TRITON_TOKEN": TOKEN})
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    video, extended = result["video"], result["extended"]
    assert (video["status"], video["progress"], video["seconds"], video["size"]) == ("completed", 100, "4", "128x64")
    decoded = decode_video((tmp_path / "video.mp4").read_bytes(), "mp4")
    assert (decoded.num_frames, decoded.size) == (5, (128, 64)) and decoded.fps == pytest.approx(5, abs=0.5)

    assert (extended["status"], extended["seconds"]) == ("completed", "8") and extended["id"] != video["id"]
    longer = decode_video((tmp_path / "extended.mp4").read_bytes(), "mp4")
    assert longer.num_frames == 2 * 5 - 1  # the second clip starts from the first's last frame
    assert max_abs_diff(longer.frames[:5], decoded.frames) <= 1
    assert result["refused"] == {"kind": "BadRequestError", "status": 400, "param": "size"}
