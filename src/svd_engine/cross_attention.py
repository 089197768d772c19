"""Cross-attention to SVD's one conditioning token, computed without attention.

SVD's UNet conditions on a single token, the CLIP image embedding (encoder_hidden_states is
batch×1×1024): every `attn2` of its spatial and temporal transformer blocks attends to it, the
temporal ones through the same token repeated for each pixel. A softmax over one key is exactly 1
whatever the query, so the attention output is that token's value row at every query position:
to_out(to_v(token)), broadcast. `SingleTokenCrossAttention` computes just that, projecting one row
instead of one per position, and skips to_q, to_k and the attention itself.

Exact up to float rounding: the same operations on the same numbers (the one-key softmax is exactly 1
and SDPA returns the value row bit for bit), except that to_out multiplies one row instead of many
equal rows, which a matrix-product kernel may sum in another order. Measured on the tiny UNet
(tests/unit/test_cross_attention.py): float32 max |Δ| 1.1e-6 on outputs up to 1.6 (a few ulps);
float16 and bfloat16 identical to the stock run; the tiny pipeline's frames identical. One divergence:
where the stock path's q·k overflows (inf or NaN scores in half precision) it returns NaN, and this the
value row, which is what a softmax over one finite score gives.

What it saves, counted with torch.utils.flop_counter.FlopCounterMode over one call of SVD-XT's UNet
(diffusers' UNetSpatioTemporalConditionModel defaults, 32 cross-attention modules) on meta tensors (no
compute, seconds): batch 2 (classifier-free guidance), 25 frames, 576×1024 (latents 72×128). Stock
159.9 TFLOP, of which the cross-attention modules are 5.98 TFLOP (3.74 %); with this 154.1 TFLOP, the
cross-attention keeping 0.17 TFLOP (to_v and to_out on one row per frame, per pixel in the temporal
blocks, whose context repeats the token per pixel): 5.82 TFLOP, 3.64 % of the UNet, removed.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


class SingleTokenCrossAttention:
    """Cross-attention to a one-token context as to_out(to_v(token)) broadcast; anything else to `fallback`.

    AttnProcessor2_0's semantics otherwise: norm_cross on the context, the residual connection and
    rescale_output_factor on the output, 3-D (B×S×C) or 4-D (B×C×H×W) hidden states. group_norm,
    spatial_norm, norm_q and norm_k only shape the query or key, which a one-key softmax ignores.
    Falls back for self-attention, several tokens, a mask (it may mask the only key) and in training
    (dropout would draw one mask for all positions).
    """

    def __init__(self, fallback=None):
        self.fallback = AttnProcessor2_0() if fallback is None else fallback

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        context = encoder_hidden_states
        if context is None or context.shape[1] != 1 or attention_mask is not None or attn.training:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        output = attn.to_out[1](attn.to_out[0](attn.to_v(context)))  # B×1×C
        if hidden_states.ndim == 4:
            output = output.transpose(1, 2).unsqueeze(-1)  # B×C×1×1
            shape = hidden_states.shape
        else:
            shape = torch.Size((*hidden_states.shape[:2], output.shape[-1]))
        output = output + hidden_states if attn.residual_connection else output.expand(shape)
        return output / attn.rescale_output_factor

    def __getattr__(self, name: str):
        """The wrapped processor's attributes read through (a pinned kernel, say): the wrapper is transparent."""
        if name == "fallback":  # not set yet (copy, unpickle): no recursion
            raise AttributeError(name)
        return getattr(self.fallback, name)


def use_single_token_cross_attention(model: torch.nn.Module) -> int:
    """Wrap each cross-attention module's processor (kept as the fallback); returns how many were wrapped.

    After any `set_attn_processor` and before compiling. Self-attention processors are left as they are.
    """
    wrapped = 0
    for module in model.modules():
        if (
            isinstance(module, Attention)
            and module.is_cross_attention
            and not isinstance(module.processor, SingleTokenCrossAttention)
        ):
            # diffusers annotates set_processor with its own AttnProcessor class; any callable processor works
            module.set_processor(SingleTokenCrossAttention(module.processor))  # type: ignore[arg-type]
            wrapped += 1
    return wrapped
