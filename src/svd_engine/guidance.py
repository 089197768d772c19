"""Guidance only where it matters: the final denoising steps of a pipeline call without the unconditional pass.

SVD's classifier-free guidance runs the UNet on 2B samples per step, the unconditional half first (diffusers
concatenates `[negative, positive]` for the image embeddings, the image latents and the time ids alike), and
combines `uncond + w · (cond − uncond)`. At low noise guidance changes little (Kynkäänniemi et al., "Applying
Guidance in a Limited Interval Improves Sample and Distribution Quality in Diffusion Models", 2024; Castillo
et al., "Adaptive Guidance", 2023), so the last k steps may use the conditional prediction alone.

`ConditionalFinalSteps` stands in for the pipeline's UNet during one call. On the last k steps it runs the
UNet on the conditional half of the batch only and returns that prediction twice, so diffusers' own guidance
formula gives exactly `cond` (`cond + w · (cond − cond)` is `cond` to the bit). Without guidance (the
pipeline's `do_classifier_free_guidance` false: batch B, no unconditional half) it changes nothing.
"""

from __future__ import annotations

import contextlib

import torch

from .feature_cache import CachedUNet
from .pipeline import unet_replaced


def conditional_final_steps(pipeline, steps: int) -> contextlib.AbstractContextManager[ConditionalFinalSteps]:
    """`pipeline.unet` (whatever stands there: the UNet, compiled or not, or a CachedUNet) wrapped for one
    pipeline call whose last `steps` denoising steps run the conditional pass alone."""
    return unet_replaced(pipeline, lambda unet: ConditionalFinalSteps(pipeline, unet, steps))


class ConditionalFinalSteps:
    """The pipeline's UNet for one call: as it is on the guided steps, on the conditional half on the last ones."""

    def __init__(self, pipeline, unet, steps: int):
        self._pipeline = pipeline
        self._unet = unet
        self._steps = steps
        self.step = 0

    def __getattr__(self, name: str):  # config, dtype, device: the pipeline reads them from its UNet
        return getattr(self._unet, name)

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        return_dict: bool = False,
    ) -> tuple[torch.Tensor]:
        step = self.step
        self.step += 1
        # The loop's own test (the per-frame guidance tensor by now): true exactly when it doubled the latents.
        guided = self._pipeline.do_classifier_free_guidance
        if not guided or step < self._pipeline.num_timesteps - self._steps:
            return self._unet(
                sample,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                added_time_ids=added_time_ids,
                return_dict=False,
            )
        half = sample.shape[0] // 2  # the conditional samples are the second half
        if isinstance(self._unet, CachedUNet):
            self._unet.keep_last_samples(half)
        noise = self._unet(
            sample[half:],
            timestep,
            encoder_hidden_states=encoder_hidden_states[half:],
            added_time_ids=added_time_ids[half:],
            return_dict=False,
        )[0]
        return (torch.cat([noise, noise]),)
