"""svd_engine: Stable Video Diffusion generation; never imports Triton (tests/unit/test_layers.py checks).

engine = SVDEngine.load(model_source="tiny", default_width=64, default_height=64)
[result] = engine.generate([engine.parse(image_bytes, num_frames=8, seed=1)])
result.save("out.mp4")
"""

from .config import DEFAULT_MODEL_SOURCE, EngineConfig
from .errors import EngineError, GenerationCancelled, InvalidRequest, ModelLoadError, OutOfMemory, VideoEncodingError
from .request import GenerationRequest
from .video import encode_video

ENGINE_NAMES = ("GenerationResult", "Progress", "SVDEngine")


def __getattr__(name):
    """The engine needs torch: imported on first use, so the torch-free parts (weights checks) work without it."""
    if name in ENGINE_NAMES:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_MODEL_SOURCE",
    "EngineConfig",
    "EngineError",
    "GenerationCancelled",
    "GenerationRequest",
    "GenerationResult",
    "InvalidRequest",
    "ModelLoadError",
    "OutOfMemory",
    "Progress",
    "SVDEngine",
    "VideoEncodingError",
    "encode_video",
]
