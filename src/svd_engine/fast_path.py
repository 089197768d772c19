"""The fast path: speed-ups applied to a loaded pipeline, each one a switch in EngineConfig.

On by default with CUDA and off on CPU (`fast_path=auto`). Applied in this order:
fused QKV projections; FP8 linear layers in the UNet (opt-in, torchao); a pinned SDPA kernel for the
UNet's spatial and for its temporal attention; channels_last convolutions; torch.compile of the UNet and
the VAE decoder. benchmarks/fast_path.py measures each one against the stock diffusers pipeline.

Compilation is static (`dynamic=False`) and happens once, at load, for the deployment's default
request shape (`SVDEngine` warms it up). After that, requests run under torch's
`eager_on_recompile` stance: a shape that was compiled runs compiled and any other shape runs
eagerly, so no request ever pays for a compilation (diffusers issue 10317 is the long-lived-server
failure this avoids).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, FusedAttnProcessor2_0
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import EngineConfig
from .cross_attention import use_single_token_cross_attention
from .errors import ModelLoadError

SDPA_KERNELS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
CUDA_GRAPH_MODES = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}
"""Compile modes that capture CUDA graphs → the same mode without them, used for the VAE decoder
(its chunk outputs are kept across calls, which a CUDA-graph replay would overwrite)."""
FP8_MIN_CAPABILITY = (8, 9)


def attention_kind(name: str) -> str:
    """`temporal` for a UNet attention module (or processor) attending across frames, else `spatial`."""
    return "temporal" if "temporal_transformer_blocks" in name else "spatial"


class PinnedKernelProcessor:
    """A diffusers attention processor run with one SDPA kernel allowed (errors if it cannot apply)."""

    def __init__(self, processor, kernel: SDPBackend):
        self.processor = processor
        self.kernel = kernel

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        with sdpa_kernel(self.kernel):
            return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class FastPath:
    """The fast-path switches resolved for one device, applied to a pipeline, and the request-time rules."""

    def __init__(self, config: EngineConfig, device: torch.device):
        self.config = config
        self.device = torch.device(device)
        self.enabled = config.fast_path == "on" or (config.fast_path == "auto" and self.device.type == "cuda")
        self.compiles = self.enabled and config.compile != "none"
        self.ready = False
        """Set once the compiled shapes are warmed up; from then on nothing recompiles."""

    def describe(self) -> str:
        if not self.enabled:
            return "fast path off"
        c = self.config
        parts = [f"attention spatial={c.spatial_attention} temporal={c.temporal_attention}"]
        parts += [
            name for name, on in (("fused QKV", c.fuse_qkv), ("channels_last", c.channels_last), ("fp8", c.fp8)) if on
        ]
        if self.compiles:
            parts.append(
                f"compiled ({c.compile_backend}, {c.compile}{', VAE decoder too' if c.compile_vae else ''}, "
                f"batch 1–{c.compile_batch_size})"
            )
        return "fast path: " + ", ".join(parts)

    def apply(self, pipeline) -> None:
        """Change `pipeline` in place; raises ModelLoadError when a switch cannot work on this device."""
        if not self.enabled:
            use_single_token_cross_attention(pipeline.unet)  # exact (svd_engine.cross_attention): not a switch
            return
        c = self.config
        if c.fp8:
            self._check_fp8()
        models = (pipeline.unet, pipeline.vae)
        if c.fuse_qkv:  # per module: the models' fuse_qkv_projections() skips this Attention class
            for model in models:
                for module in model.modules():
                    if isinstance(module, Attention):
                        module.fuse_projections()
        if c.fp8:
            self._quantize_fp8(pipeline.unet)
        if c.fuse_qkv or {c.spatial_attention, c.temporal_attention} != {"auto"}:
            pipeline.unet.set_attn_processor({name: self._processor(name) for name in pipeline.unet.attn_processors})
            if c.fuse_qkv:  # the VAE's attention (one 512-wide head: too wide for flash and cuDNN) keeps PyTorch's pick
                pipeline.vae.set_attn_processor(FusedAttnProcessor2_0())
        use_single_token_cross_attention(pipeline.unet)  # wraps the processors set above, so after them
        if c.channels_last:  # 2-D convolutions only: the temporal ones are 3-D
            for model in models:
                for module in model.modules():
                    if isinstance(module, torch.nn.Conv2d):
                        # Module.to takes memory_format (its documented fourth form), which torch's overloads omit
                        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.compiles:
            # Compiled statically, one graph per shape, and the blocks of one class (SVD-XT: three widths) share one
            # cache: dynamo's default of 8 entries, a hard failure under fullgraph, allowed for each batch compiled.
            batches = c.compile_batch_size + (math.ceil(c.compile_batch_size / 2) if c.compile_conditional else 0)
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 8 * batches)
            pipeline.unet = self._compile(pipeline.unet, c.compile)
            if c.compile_vae:
                pipeline.vae.decoder = self._compile(pipeline.vae.decoder, CUDA_GRAPH_MODES.get(c.compile, c.compile))

    def _processor(self, name: str):
        """The UNet processor for attention module `name`: fused or not, with its kind's kernel pinned."""
        processor = FusedAttnProcessor2_0() if self.config.fuse_qkv else AttnProcessor2_0()
        kernel = self.config.temporal_attention if attention_kind(name) == "temporal" else self.config.spatial_attention
        return processor if kernel == "auto" else PinnedKernelProcessor(processor, SDPA_KERNELS[kernel])

    def compile_region(self, module):
        """One UNet block compiled on its own (feature caching runs the UNet block by block), or as it is."""
        return self._compile(module, self.config.compile) if self.compiles else module

    def _compile(self, module, mode: str):
        options: dict[str, Any] = {"mode": mode} if self.config.compile_backend == "inductor" else {}
        return torch.compile(module, backend=self.config.compile_backend, dynamic=False, fullgraph=True, **options)

    def _check_fp8(self) -> None:
        capability = torch.cuda.get_device_capability(self.device) if self.device.type == "cuda" else None
        if capability is None or capability < FP8_MIN_CAPABILITY:
            found = f"compute capability {capability[0]}.{capability[1]}" if capability else self.device.type
            raise ModelLoadError(
                f"fp8=true needs a CUDA GPU with compute capability 8.9 or newer (Hopper, Ada); this device is {found}"
            )

    @staticmethod
    def _quantize_fp8(unet) -> None:
        try:
            from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
        except ImportError:
            raise ModelLoadError("fp8=true needs torchao: pip install 'svd-triton[fp8]'") from None

        def fits(module, _name):  # FP8 matrix products need both dimensions divisible by 16
            return (
                isinstance(module, torch.nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0
            )

        quantize_(unet, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=fits)

    def request_context(self):
        """Around each request's pipeline call: compiled shapes run compiled, others eagerly."""
        if self.compiles and self.ready:
            return torch.compiler.set_stance("eager_on_recompile")
        return contextlib.nullcontext()

    def before_unet_call(self) -> None:
        """CUDA-graph modes: mark a new step so a replay never overwrites an output still in use."""
        if self.compiles and self.config.compile in CUDA_GRAPH_MODES:
            torch.compiler.cudagraph_mark_step_begin()
