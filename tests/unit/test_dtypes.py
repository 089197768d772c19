"""The engine in half precision on the CPU, with the tiny model: what a GPU deployment runs (float16 by
default, bfloat16 by choice), checked where no GPU is; per-sample fps inside one batch."""
import numpy as np
import pytest

from svd_engine import SVDEngine
from tests.support.videos import decode_video

SIZE = {"default_width": 64, "default_height": 64, "default_num_frames": 4, "default_num_inference_steps": 2}
# Largest uint8 difference from float32 and between a batched and a lone request, per dtype. Measured on
# the tiny model: float16 up to 2 levels for both; bfloat16 13 and 12 (its 8-bit mantissa rounds
# differently when the batch changes the matrix shapes). float32 stays within 1 level (test_engine).
TOLERANCE = {"float16": {"vs_float32": 4, "batched_vs_alone": 2}, "bfloat16": {"vs_float32": 24, "batched_vs_alone": 24}}


def diff(a, b) -> np.ndarray:
    return np.abs(a.frames.astype(int) - b.frames.astype(int))


@pytest.fixture(scope="module")
def float32_batch(sample_png):
    engine = SVDEngine.load(model_source="tiny", device="cpu", dtype="float32", **SIZE)
    return engine.generate([engine.parse(sample_png, seed=1, fps=5), engine.parse(sample_png, seed=2, fps=20)])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_batch_with_per_sample_fps(dtype, sample_png, float32_batch):
    import torch

    engine = SVDEngine.load(model_source="tiny", device="cpu", dtype=dtype, **SIZE)
    assert engine.pipeline.unet.dtype == engine.pipeline.vae.dtype == getattr(torch, dtype)
    requests = [engine.parse(sample_png, seed=1, fps=5), engine.parse(sample_png, seed=2, fps=20)]
    batch = engine.generate(requests)
    for result, reference in zip(batch, float32_batch):
        assert result.fps == reference.fps and decode_video(result.video, "mp4").num_frames == 4
        assert diff(result, reference).max() <= TOLERANCE[dtype]["vs_float32"]
        assert diff(result, reference).mean() < 2
    [alone] = engine.generate([requests[1]])
    assert diff(alone, batch[1]).max() <= TOLERANCE[dtype]["batched_vs_alone"]
    # the fps is per sample: the first request at the second one's fps is another video
    [refps] = engine.generate([engine.parse(sample_png, seed=1, fps=20)])
    assert diff(refps, batch[0]).max() > TOLERANCE[dtype]["vs_float32"]
