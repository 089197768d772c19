"""Cross-attention to one token as a value projection (svd_engine.cross_attention): the same outputs as
diffusers' attention, layer by layer and through the tiny UNet and pipeline, at float32 and half precision."""
import copy

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, FusedAttnProcessor2_0
from torch.nn.attention import SDPBackend

from svd_engine import EngineConfig, SVDEngine
from svd_engine.cross_attention import SingleTokenCrossAttention, use_single_token_cross_attention
from svd_engine.fast_path import PinnedKernelProcessor
from svd_engine.pipeline import uint8_frames
from svd_engine.testing import build_tiny_pipeline

FLOAT32_BOUND = 1e-5
"""Largest |Δ| allowed at float32 on outputs of magnitude ≈1: a few dozen ulps. The only difference from the
stock path is to_out multiplying one row instead of many equal rows (the kernel may sum in another order);
measured 1.1e-6 through the tiny UNet."""


def half_ulp(dtype: torch.dtype, reference: torch.Tensor) -> float:
    """One unit of `dtype`'s rounding at the reference's largest magnitude."""
    return torch.finfo(dtype).eps * reference.abs().max().item()


@pytest.fixture(scope="module")
def unet():
    return build_tiny_pipeline().unet


@pytest.fixture(scope="module")
def unet_inputs():
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 3, 8, 16, 16, generator=generator)  # batch 2 (CFG), 3 frames, 8 channels, 16×16 latents
    context = torch.randn(2, 1, 32, generator=generator)  # one CLIP image token per video
    added_time_ids = torch.randn(2, 3, generator=generator) * 10
    return sample, context, added_time_ids


def run_unet(unet, inputs, dtype=torch.float32, shortcut=False):
    unet = copy.deepcopy(unet).to(dtype)
    if shortcut:
        assert use_single_token_cross_attention(unet) == 12  # attn2 of 6 spatial and 6 temporal blocks
    sample, context, added_time_ids = (tensor.to(dtype) for tensor in inputs)
    with torch.inference_mode():
        return unet(sample, 10.0, context, added_time_ids, return_dict=False)[0].float()


def attention(**options) -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=32, cross_attention_dim=24, heads=2, dim_head=8, **options).eval()


@pytest.mark.parametrize(
    ("options", "shape"),
    [
        ({}, (3, 10, 32)),
        # 4-D input, every norm around the attention, a residual connection and a rescaled output.
        (
            dict(norm_num_groups=4, spatial_norm_dim=4, cross_attention_norm="layer_norm", residual_connection=True,
                 rescale_output_factor=2.0, qk_norm="layer_norm"),
            (3, 32, 4, 5),
        ),
    ],
    ids=["plain", "4d-norms-residual"],
)
def test_a_layer_matches_the_stock_processor_and_falls_back_where_it_must(options, shape):
    attn = attention(**options)
    hidden = torch.randn(shape)
    temb = torch.randn(3, 4, 2, 2) if "spatial_norm_dim" in options else None
    shortcut = SingleTokenCrossAttention()

    def both(context, mask=None):
        return [processor(attn, hidden, context, mask, temb) for processor in (AttnProcessor2_0(), shortcut)]

    with torch.inference_mode():
        stock, fast = both(torch.randn(3, 1, 24))
        assert fast.shape == stock.shape and (fast - stock).abs().max() <= FLOAT32_BOUND
        # Several tokens, a mask, training, self-attention: the stock processor's own result, bit for bit.
        for context, mask in ((torch.randn(3, 4, 24), None), (torch.randn(3, 1, 24), torch.zeros(3, 1, 1))):
            assert torch.equal(*both(context, mask))
        self_attention = Attention(query_dim=32, heads=2, dim_head=8).eval()
        assert torch.equal(AttnProcessor2_0()(self_attention, hidden), shortcut(self_attention, hidden))
        attn.train()
        torch.manual_seed(1)
        stock = AttnProcessor2_0()(attn, hidden, torch.randn(3, 1, 24), None, temb)
        torch.manual_seed(1)
        assert torch.equal(stock, shortcut(attn, hidden, torch.randn(3, 1, 24), None, temb))


def test_unet_float32_output_matches_stock(unet, unet_inputs):
    stock = run_unet(unet, unet_inputs)
    fast = run_unet(unet, unet_inputs, shortcut=True)
    assert (fast - stock).abs().max() <= FLOAT32_BOUND
    assert stock.abs().max() > 0.5  # a real output, not a vanishing one that anything would match


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_unet_half_precision_output_matches_stock(unet, unet_inputs, dtype):
    """Against the stock run in the same dtype: at most one rounding unit at the output's scale (measured: 0,
    identical); against float32: no further from it than the stock half-precision run, within that unit."""
    reference = run_unet(unet, unet_inputs)
    stock = run_unet(unet, unet_inputs, dtype)
    fast = run_unet(unet, unet_inputs, dtype, shortcut=True)
    ulp = half_ulp(dtype, reference)
    assert (fast - stock).abs().max() <= ulp
    assert (fast - reference).abs().max() <= (stock - reference).abs().max() + ulp


def test_the_engine_uses_it_and_never_projects_queries_or_keys_in_cross_attention(unet_inputs):
    """Wrapped around whatever the fast path installs (fused QKV, a pinned kernel here), self-attention untouched."""
    config = EngineConfig(device="cpu", fast_path="on", compile="none", spatial_attention="math")
    engine = SVDEngine.from_pipeline(build_tiny_pipeline(), config)
    modules = [m for m in engine.pipeline.unet.modules() if isinstance(m, Attention)]
    cross = [m for m in modules if m.is_cross_attention]
    assert len(cross) == 12 and all(isinstance(m.processor, SingleTokenCrossAttention) for m in cross)
    for m in cross:
        fallback = m.processor.fallback
        if isinstance(fallback, PinnedKernelProcessor):  # spatial: pinned to math; the wrapper reads the kernel through
            assert m.processor.kernel == fallback.kernel == SDPBackend.MATH
            fallback = fallback.processor
        assert isinstance(fallback, FusedAttnProcessor2_0)
    assert not any(isinstance(m.processor, SingleTokenCrossAttention) for m in modules if not m.is_cross_attention)

    calls = {"q": 0, "k": 0, "kv": 0, "v": 0}

    def count(kind):
        return lambda *_: calls.__setitem__(kind, calls[kind] + 1)

    hooks = [getattr(m, f"to_{kind}").register_forward_hook(count(kind)) for m in cross for kind in calls]
    sample, context, added_time_ids = unet_inputs
    with torch.inference_mode():
        engine.pipeline.unet(sample, 10.0, context, added_time_ids, return_dict=False)
    for hook in hooks:
        hook.remove()
    assert calls == {"q": 0, "k": 0, "kv": 0, "v": 12}
    # Off (the CPU default) it is on too: it is not a fast-path switch.
    off = SVDEngine.from_pipeline(build_tiny_pipeline(), EngineConfig(device="cpu"))
    assert sum(isinstance(p, SingleTokenCrossAttention) for p in off.pipeline.unet.attn_processors.values()) == 12


def test_a_whole_generation_gives_the_same_frames(sample_rgb):
    """Three denoising steps through the tiny pipeline: the same frames, with and without it."""
    from PIL import Image

    pipeline = build_tiny_pipeline()
    image = Image.fromarray(sample_rgb)

    def generate():
        with torch.inference_mode():
            return pipeline(image, height=64, width=64, num_frames=4, num_inference_steps=3, decode_chunk_size=4,
                            generator=torch.Generator().manual_seed(3), output_type="pt", return_dict=False)

    stock = generate()
    use_single_token_cross_attention(pipeline.unet)
    fast = generate()
    assert (fast - stock).abs().max() <= FLOAT32_BOUND
    assert np.abs(uint8_frames(fast).astype(int) - uint8_frames(stock)).max() <= 1
    assert uint8_frames(stock).std() > 1  # a real video


def test_it_compiles_without_graph_breaks():
    """The fast path compiles the UNet with fullgraph=True: the shortcut and its fallback must trace whole."""
    attn = attention()
    attn.set_processor(SingleTokenCrossAttention(PinnedKernelProcessor(AttnProcessor2_0(), SDPBackend.MATH)))
    compiled = torch.compile(attn, backend="eager", fullgraph=True)
    hidden = torch.randn(2, 6, 32)
    with torch.inference_mode():
        for context in (torch.randn(2, 1, 24), torch.randn(2, 3, 24)):
            assert torch.equal(compiled(hidden, context), attn(hidden, context))


def test_at_svd_xt_size_it_removes_3_6_percent_of_the_unet_flops():
    """The module docstring's count: SVD-XT's UNet on meta tensors (shapes only), batch 2, 25 frames, 576×1024."""
    from diffusers import UNetSpatioTemporalConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel().eval().to("meta")  # torch.Tensor([…]) buffers skip the device
        inputs = torch.empty(2, 25, 8, 72, 128), 1.0, torch.empty(2, 1, 1024), torch.empty(2, 3)

    def flops():
        with torch.device("meta"), torch.no_grad(), FlopCounterMode(display=False) as counter:
            unet(*inputs, return_dict=False)
        return counter.get_total_flops()

    stock = flops()
    assert stock == pytest.approx(159.9e12, rel=1e-3)
    assert use_single_token_cross_attention(unet) == 32
    assert 1 - flops() / stock == pytest.approx(0.0364, abs=5e-4)
