"""Fixtures every tier shares; plain helpers are in tests/support (a package: `from tests.support import TOKEN`)."""
import os
import sys

# One compute thread per process, this one and every server it starts (they inherit the environment). The
# suite's models are tiny, so intra-op threads buy nothing; on 2 cores shared by the test process, a
# tritonserver stub and a gateway, each op instead waits for a descheduled thread (docs/development.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # imported by a plugin before this file: set it there too
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

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
    """One real tritonserver (CPU config, tiny model, bearer token) for the whole run, on free ports, with
    every model (text_to_image and the text_to_video chain too)."""
    with start_server(models=()) as server:
        yield server


@pytest.fixture(scope="session")
def triton_stream():
    """The streaming variant (cpu_stream: decoupled, progress over gRPC streams), same token."""
    with start_server(stream=True, models=()) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url():
    """One throwaway PostgreSQL cluster on loopback for the whole run (tests/support/postgres.py); each test
    that needs a clean database creates one in it."""
    from tests.support.postgres import PostgresMissing, throwaway_postgres

    try:
        with throwaway_postgres() as url:
            yield url
    except PostgresMissing as error:
        pytest.fail(str(error))


def pytest_collection_modifyitems(config, items):
    """Deselect the `gpu` tests where no CUDA device is visible; everything else runs (slow ones too), the
    files with `slow` tests first: under pytest-xdist (`make test`) they then start at once, side by side with
    the quick files, instead of ending the run on one worker. A file's tests stay together and in order."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_tests:
        import torch

        if not torch.cuda.is_available():
            config.hook.pytest_deselected(items=gpu_tests)
            items[:] = [item for item in items if not item.get_closest_marker("gpu")]
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
