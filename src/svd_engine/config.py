"""Deployment-level settings: where the weights come from, defaults and limits.

The same code serves a CPU demo and a GPU deployment; only this configuration differs. In Triton it
is read from the `parameters` of config.pbtxt (all strings there) by svd_contract's reader: svd_xt's
request defaults and limits are svd_contract.Deployment, which its clients read too; EngineConfig adds
what only the engine reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Self

from svd_contract import Deployment
from svd_contract.deployment import read_parameters

DEFAULT_MODEL_SOURCE = "stabilityai/stable-video-diffusion-img2vid-xt"
DEFAULT_TEXT_IMAGE_SOURCE = "stabilityai/sdxl-turbo"


@dataclass(frozen=True)
class PipelineConfig:
    """What every engine's deployment sets: where the weights come from, where they run, how they leave."""

    model_source: str = ""
    """A hub id, a local folder holding model_index.json, s3://bucket/prefix, or a built-in model (`tiny`)."""
    device: str = "auto"
    """`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`."""
    dtype: str = "auto"
    """`auto` (float16 on CUDA, float32 on CPU), `float16`, `bfloat16` or `float32`."""
    release_mechanism: str = "auto"
    """How an idle model frees the device (ResidentEngine.release): `offload` moves the weights to pinned
    host memory and back (compiled code stays valid), `reload` drops the pipeline and loads it again
    from model_source; `auto`: offload on CUDA, reload on CPU (where the host is the device and
    offloading would free nothing)."""

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if hasattr(self, name) and getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> Self:
        """Build from string parameters (config.pbtxt); unknown names and bad values raise ValueError naming them."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(parameters) - known)
        if unknown:
            raise ValueError(f"unknown engine parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**read_parameters(cls, parameters))


@dataclass(frozen=True)
class EngineConfig(PipelineConfig, Deployment):
    """The image-to-video engine's (svd_xt's) deployment: its request defaults and limits (svd_contract's
    Deployment, which clients read too) and how the engine runs."""

    model_source: str = DEFAULT_MODEL_SOURCE
    match_segment_colors: bool = False
    """Match each continuation segment's colour statistics to the first segment's (a drift mitigation).
    Off: on the random-weight models it made no measurable difference (docs/benchmarks.md, "Segments");
    `python -m benchmarks.segments --model-source ...` measures it on real weights."""

    # The fast path (svd_engine.fast_path): each switch below applies only while `fast_path` is on.
    fast_path: str = "auto"
    """`auto` (on with CUDA, off on CPU), `on` or `off`."""
    spatial_attention: str = "auto"
    """SDPA kernel for the UNet's spatial attention: `auto` (PyTorch picks), `flash`, `efficient`,
    `cudnn` or `math`. The VAE's attention always lets PyTorch pick (its 512-wide head is too wide
    for flash and cuDNN)."""
    temporal_attention: str = "auto"
    """SDPA kernel for the UNet's temporal attention (sequences as long as the frame count)."""
    fuse_qkv: bool = True
    """One matrix product for Q, K and V (K and V in cross-attention) instead of three."""
    channels_last: bool = True
    """NHWC memory layout for the UNet and VAE convolutions."""
    compile: str = "default"
    """torch.compile mode for the UNet and the VAE decoder: `none`, `default`, `reduce-overhead`,
    `max-autotune` or `max-autotune-no-cudagraphs`. Compiled once at load for the default request
    shape; other shapes run eagerly rather than recompiling."""
    compile_vae: bool = True
    compile_backend: str = "inductor"
    compile_batch_size: int = 1
    """Batch sizes 1..N are compiled at load; a batch of compiled-shape requests is split to fit."""
    compile_conditional: bool = True
    """Also compile, at load, the UNet batches of conditional-only steps (`conditional_final_steps`, the
    `balanced` and `fast` presets) that the guided ones do not cover: an odd number of requests. Off, those
    steps run eagerly and the load compiles less."""
    fp8: bool = False
    """FP8 (e4m3) linear layers in the UNet via torchao: needs compute capability 8.9+ (Hopper, Ada)."""

    def __post_init__(self):
        PipelineConfig.__post_init__(self)
        Deployment.__post_init__(self)
        if self.compile_batch_size < 1:
            raise ValueError(f"compile_batch_size={self.compile_batch_size} must be at least 1")


ATTENTION_KERNELS = ("auto", "flash", "efficient", "cudnn", "math")
CHOICES = {
    "dtype": ("auto", "float16", "bfloat16", "float32"),
    "fast_path": ("auto", "on", "off"),
    "spatial_attention": ATTENTION_KERNELS,
    "temporal_attention": ATTENTION_KERNELS,
    "release_mechanism": ("auto", "offload", "reload"),
    "compile": ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
}


@dataclass(frozen=True)
class TextImageConfig(PipelineConfig):
    """The text-to-image engine's (text_to_image's) deployment. Its model_source is any diffusers
    text-to-image pipeline (AutoPipelineForText2Image); the defaults suit SDXL-Turbo."""

    model_source: str = DEFAULT_TEXT_IMAGE_SOURCE
    default_width: int = 1024
    default_height: int = 576
    """The size of a request that sends none: text_to_video's first frame, so svd_xt's default."""
    default_num_inference_steps: int = 1
    """SDXL-Turbo is distilled for 1–4 steps without guidance."""
    default_guidance_scale: float = 0.0
    """0 turns classifier-free guidance off (one UNet pass a step, as SDXL-Turbo is meant to run)."""
    max_pixels: int = 1024 * 1024
    """Upper bound on width × height of what one request generates."""
    max_num_inference_steps: int = 50
    max_prompt_chars: int = 2000
    """Longer prompts are refused before tokenizing (CLIP reads the first 77 tokens anyway)."""
