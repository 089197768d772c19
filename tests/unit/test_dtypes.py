"""The engine in half precision on the CPU, with the tiny model: what a GPU deployment runs (float16 by
default, bfloat16 by choice), checked where no GPU is; per-sample fps inside one batch.

Half precision changes every pixel a little, by an amount that depends on the CPU's kernels, so no
assertion here uses a fixed bound. Each half-precision video is compared with float32 videos computed in
the same run instead: it must be nearest, in Euclidean distance, to the float32 video of its own request
(its seed and its fps) among the float32 videos of the other requests. Being nearer to A than to B in
that distance means lying past the midpoint of A→B along that line, so rounding noise, which is not
aligned with the fps's effect, does not decide it: on the tiny model the half-precision videos project to
0.01 and 0.99 of the way from the slow-fps float32 video to the fast one. The fps values are the
contract's extremes (1 and 60)."""
import numpy as np
import pytest

from svd_contract import PARAMETERS
from svd_engine import SVDEngine
from tests.support.videos import decode_video

SIZE = {"default_width": 64, "default_height": 64, "default_num_frames": 4, "default_num_inference_steps": 2}
SLOW_FPS, FAST_FPS = PARAMETERS["fps"].low, PARAMETERS["fps"].high
REQUESTS = {"seed 1, slow": (1, SLOW_FPS), "seed 2, fast": (2, FAST_FPS), "seed 1, fast": (1, FAST_FPS)}
"""(seed, fps) of each request; the last differs from the first by its fps alone, in the same batch."""


def distance(a, b) -> float:
    """Euclidean distance between two results' frames."""
    return float(np.linalg.norm(a.frames.astype(float) - b.frames.astype(float)))


def parse_all(engine, sample_png) -> dict:
    return {name: engine.parse(sample_png, seed=seed, fps=fps) for name, (seed, fps) in REQUESTS.items()}


@pytest.fixture(scope="module")
def float32_results(sample_png):
    """Each request alone in float32: the references."""
    engine = SVDEngine.load(model_source="tiny", device="cpu", dtype="float32", **SIZE)
    return {name: engine.generate([request])[0] for name, request in parse_all(engine, sample_png).items()}


def nearest(result, references: dict) -> str:
    return min(references, key=lambda name: distance(result, references[name]))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_batch_with_per_sample_fps(dtype, sample_png, float32_results):
    import torch

    engine = SVDEngine.load(model_source="tiny", device="cpu", dtype=dtype, **SIZE)
    assert engine.pipeline.unet.dtype == engine.pipeline.vae.dtype == getattr(torch, dtype)
    requests = parse_all(engine, sample_png)
    batch = dict(zip(requests, engine.generate(list(requests.values()))))
    for name, result in batch.items():
        assert result.fps == REQUESTS[name][1] and decode_video(result.video, "mp4").num_frames == 4
        # its own request's float32 video, not another seed's and not the same seed at the other fps
        assert nearest(result, float32_results) == name, {other: distance(result, reference)
                                                          for other, reference in float32_results.items()}
