"""DeepCache-style feature caching for SVD's UNet (`UNetSpatioTemporalConditionModel`), training-free.

The deep part of a UNet changes little between neighbouring denoising steps (Ma et al., "DeepCache:
Accelerating Diffusion Models for Free", 2023; OneDiff ships the same idea for SVD). With interval k
and branch b, steps 0, k, 2k, … of a pipeline call run the whole UNet and keep the feature that enters
up block n−1−b (n down and n up blocks; b = n−1 keeps the mid block's output). The steps between run
only the shallow branch: the input convolution, down blocks 0…b, up blocks n−1−b…n−1 (fed the kept
feature and the fresh skip connections) and the output head. b = 0 is the cheapest branch.

`FeatureCache` holds the UNet's blocks, compiled one by one when the fast path compiles (regional
compilation: the same graphs serve the whole and the shallow pass of every branch, so no branch or
interval compiles anything new). A request without caching never comes here: it runs the pipeline's
own UNet (compiled whole) exactly as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .pipeline import unet_replaced


@dataclass(frozen=True)
class CachePlan:
    """Which steps of a pipeline call run the whole UNet."""

    interval: int
    branch: int

    def is_whole(self, step: int) -> bool:
        return step % self.interval == 0


class FeatureCache:
    """The UNet's blocks (as given or compiled by `wrap`) and the split forward pass over them."""

    def __init__(self, unet, wrap: Callable[[torch.nn.Module], Callable] = lambda module: module):
        self.unet = getattr(unet, "_orig_mod", unet)  # the module itself when the fast path compiled it whole
        self.down = [wrap(block) for block in self.unet.down_blocks]
        self.mid = wrap(self.unet.mid_block)
        self.up = [wrap(block) for block in self.unet.up_blocks]

    @property
    def branches(self) -> int:
        """How many branch depths this UNet offers (its down-block count: 4 for SVD and SVD-XT)."""
        return len(self.unet.down_blocks)

    def applied(self, pipeline, plan: CachePlan) -> contextlib.AbstractContextManager[CachedUNet]:
        """`pipeline.unet` replaced by a CachedUNet for one pipeline call (its step count starts at 0)."""
        return unet_replaced(pipeline, lambda unet: CachedUNet(self, plan, unet))


class CachedUNet:
    """Stands in for the pipeline's UNet during one call: whole or shallow pass by step, the rest delegated."""

    def __init__(self, cache: FeatureCache, plan: CachePlan, original):
        self._cache = cache
        self._plan = plan
        self._original = original
        self._feature: torch.Tensor | None = None
        self._feature_samples = 0
        """The batch size of the step that kept `_feature` (its rows are samples × frames)."""
        self.step = 0
        self.whole_steps = 0

    def __getattr__(self, name: str):  # config, dtype, device: the pipeline reads them from its UNet
        return getattr(self._original, name)

    def keep_last_samples(self, samples: int) -> None:
        """From the next step on the batch is its last `samples` samples (guidance's conditional-only steps,
        svd_engine.guidance): the kept feature keeps their rows alone, so a shallow step still finds each
        sample's own deep feature."""
        if self._feature is not None and self._feature_samples > samples:
            rows = self._feature.shape[0] // self._feature_samples * samples
            self._feature, self._feature_samples = self._feature[-rows:], samples

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        return_dict: bool = False,
    ) -> tuple[torch.Tensor]:
        """diffusers' UNetSpatioTemporalConditionModel.forward (0.3x), split at the plan's branch."""
        whole = self._plan.is_whole(self.step)
        self.step += 1
        self.whole_steps += whole
        cache, unet, branch = self._cache, self._cache.unet, self._plan.branch
        batch_size, num_frames = sample.shape[:2]
        forward_upsample_size = any(side % 2**unet.num_upsamplers for side in sample.shape[-2:])

        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch_size)
        emb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=sample.dtype))
        time_embeds = unet.add_time_proj(added_time_ids.flatten()).reshape((batch_size, -1)).to(emb.dtype)
        emb = emb + unet.add_embedding(time_embeds)
        sample = sample.flatten(0, 1)
        emb = emb.repeat_interleave(num_frames, dim=0, output_size=emb.shape[0] * num_frames)
        encoder_hidden_states = encoder_hidden_states.repeat_interleave(
            num_frames, dim=0, output_size=encoder_hidden_states.shape[0] * num_frames
        )
        sample = unet.conv_in(sample)
        context = {
            "temb": emb,
            "image_only_indicator": torch.zeros(batch_size, num_frames, dtype=sample.dtype, device=sample.device),
        }

        def with_attention(module, **kwargs):
            return (
                {**kwargs, **context, "encoder_hidden_states": encoder_hidden_states}
                if getattr(module, "has_cross_attention", False)
                else {**kwargs, **context}
            )

        skips = [sample]
        deepest = len(cache.down) - 1 if whole else branch
        for module, block in zip(unet.down_blocks[: deepest + 1], cache.down):
            sample, res_samples = block(**with_attention(module, hidden_states=sample))
            skips.extend(res_samples)

        first_up = len(cache.up) - 1 - branch
        if whole:
            sample = cache.mid(**with_attention(unet.mid_block, hidden_states=sample))
            first_up = 0
        else:  # the deep feature from the last whole step; the skips the shallow up blocks take
            assert self._feature is not None, "a plan's first step is whole"
            assert self._feature_samples == batch_size, "the kept feature is this batch's (keep_last_samples)"
            sample = self._feature
            skips = skips[: sum(len(module.resnets) for module in unet.up_blocks[first_up:])]

        for index in range(first_up, len(cache.up)):
            if whole and index == len(cache.up) - 1 - branch:
                self._feature = sample.clone()  # a copy: a CUDA-graph replay would overwrite its output
                self._feature_samples = batch_size
            module = unet.up_blocks[index]
            res_samples, skips = tuple(skips[-len(module.resnets) :]), skips[: -len(module.resnets)]
            upsample_size = skips[-1].shape[2:] if forward_upsample_size and index < len(cache.up) - 1 else None
            sample = cache.up[index](
                **with_attention(
                    module, hidden_states=sample, res_hidden_states_tuple=res_samples, upsample_size=upsample_size
                )
            )

        sample = unet.conv_out(unet.conv_act(unet.conv_norm_out(sample)))
        return (sample.reshape(batch_size, num_frames, *sample.shape[1:]),)
