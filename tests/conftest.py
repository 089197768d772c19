"""Fixtures every tier shares; plain helpers are in tests/support (a package: `from tests.support import TOKEN`)."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import encode_image, start_server


@pytest.fixture(scope="session")
def sample_rgb() -> np.ndarray:
    """A 96×128 RGB test picture with structure (gradients and a square), deterministic."""
    y, x = np.mgrid[0:96, 0:128]
    picture = np.stack([x * 2, y * 2, (x + y) % 256], axis=-1).astype(np.uint8)
    picture[30:60, 40:80] = (250, 30, 30)
    return picture


@pytest.fixture(scope="session")
def sample_png(sample_rgb) -> bytes:
    return encode_image(Image.fromarray(sample_rgb))


@pytest.fixture(scope="session")
def tiny_engine():
    from svd_engine import SVDEngine

    return SVDEngine.load(model_source="tiny", device="cpu", default_width=64, default_height=64,
                          default_num_frames=8, default_num_inference_steps=3, default_decode_chunk_size=4)


@pytest.fixture(scope="session")
def triton():
    """One real tritonserver (CPU config, tiny model, bearer token) for the whole run, on free ports."""
    with start_server() as server:
        yield server


@pytest.fixture(scope="session")
def triton_stream():
    """The streaming variant (cpu_stream: decoupled, progress over gRPC streams), same token."""
    with start_server(stream=True) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster on loopback (Debian's postgresql, which `make setup` installs), run as
    the `postgres` user when the tests run as root; yields its SQLAlchemy URL."""
    import os
    import shutil
    import subprocess
    import tempfile

    from svd_triton.launcher import free_port

    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not binaries:
        pytest.fail("PostgreSQL is not installed (make setup installs Debian's postgresql)")
    bin_dir = binaries[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="svd-postgres-"))
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    subprocess.run([*as_user, bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-t", "60", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Deselect the `gpu` tests where no CUDA device is visible; everything else runs (slow ones too)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if not torch.cuda.is_available():
        config.hook.pytest_deselected(items=gpu_tests)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]
