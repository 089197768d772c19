"""SVD-XT's full-size architecture (random weights) through a real tritonserver, at a tiny request size:
the shapes, memory layout and code paths of a GPU deployment's model, on the CPU."""
import numpy as np
import pytest

from tests.support import start_server
from tests.support.kserve import image_bytes, infer, scalar, small

pytestmark = pytest.mark.slow


def test_random_xt_loads_and_generates_through_tritonserver(monkeypatch, sample_png):
    monkeypatch.setenv("SVD_MODEL_SOURCE", "random-xt")
    with start_server() as server:
        tensors = small(IMAGE_BYTES=image_bytes(sample_png), NUM_FRAMES=scalar(2, np.int32),
                        NUM_INFERENCE_STEPS=scalar(1, np.int32), SEED=scalar(11, np.int64))
        frames = infer(server, "http", tensors, outputs=("FRAMES", "SEED_USED")).as_numpy("FRAMES")[0]
        log = server.log_path.read_text()
    assert "loading random-xt" in log
    assert frames.shape == (2, 64, 64, 3)
    assert 20 < frames.mean() < 235 and frames.std() > 5  # random weights: neither blank nor saturated
