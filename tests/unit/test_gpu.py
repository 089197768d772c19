"""The CUDA paths: half-precision load, the compiled fast path at a small size, running out of device
memory. Marked `gpu`: deselected automatically where no CUDA device is visible (conftest.py)."""
import numpy as np
import pytest

from svd_engine import OutOfMemory, SVDEngine
from tests.support.videos import decode_video

pytestmark = pytest.mark.gpu
SMALL = {"model_source": "tiny", "device": "cuda", "default_width": 64, "default_height": 64,
         "default_num_frames": 4, "default_num_inference_steps": 2}


@pytest.fixture(scope="module")
def cpu_reference(sample_png):
    engine = SVDEngine.load(**{**SMALL, "device": "cpu"})
    return engine.generate([engine.parse(sample_png, seed=3)])[0]


def test_auto_dtype_on_cuda_is_float16_and_close_to_float32(sample_png, cpu_reference):
    import torch

    engine = SVDEngine.load(**SMALL, fast_path="off")
    assert engine.device.type == "cuda" and engine.pipeline.unet.dtype == torch.float16
    [result] = engine.generate([engine.parse(sample_png, seed=3)])
    assert decode_video(result.video, "mp4").num_frames == 4
    assert np.abs(result.frames.astype(int) - cpu_reference.frames.astype(int)).mean() < 2


def test_compiled_fast_path_serves_two_images_without_recompiling(sample_png, sample_rgb):
    eager = SVDEngine.load(**SMALL, fast_path="off")
    fast = SVDEngine.load(**SMALL, fast_path="on", compile="default")
    assert fast.fast_path.compiles and fast.fast_path.ready
    for image in (sample_png, sample_rgb[::-1].copy()):
        [expected] = eager.generate([eager.parse(image, seed=4)])
        [got] = fast.generate([fast.parse(image, seed=4)])
        assert np.abs(got.frames.astype(int) - expected.frames.astype(int)).max() <= 2


def test_out_of_device_memory_fails_that_request_only(sample_png):
    import torch

    engine = SVDEngine.load(**SMALL, fast_path="off", max_pixels=2048 * 2048, max_work=2**40)
    torch.cuda.set_per_process_memory_fraction(0.02)  # about 1.6 GB of an 80 GB device
    try:
        huge = engine.parse(sample_png, width=2048, height=2048, num_frames=25, decode_chunk_size=25, seed=5)
        [outcome] = engine.generate([huge])
        assert isinstance(outcome, OutOfMemory) and "out of CUDA memory for 2048×2048, 25 frames" in str(outcome)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    [small] = engine.generate([engine.parse(sample_png, seed=5)])
    assert decode_video(small.video, "mp4").num_frames == 4
