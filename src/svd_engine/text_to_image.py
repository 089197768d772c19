"""Text-to-image: the first frame of a text-to-video request, made by a diffusers text-to-image pipeline.

    engine = TextImageEngine.load(TextImageConfig(model_source="tiny", default_width=64, default_height=64))
    [result] = engine.generate([engine.parse("a red kite over a green hill", seed=1)])
    result.image  # uint8 RGB, height × width × 3

Loading (a hub id, a local folder, s3://bucket/prefix or `tiny`), dtype/device resolution, the
keep-warm release (residency.py), request fields and errors are the SVD engine's; only the pipeline and
the prompt differ. The request fields are svd_contract.TEXT_IMAGE_PARAMETERS and PROMPTS.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from svd_contract import PROMPTS
from svd_contract import TEXT_IMAGE_PARAMETERS as PARAMETERS

from . import residency
from .base import ResidentEngine
from .config import TextImageConfig
from .errors import GenerationCancelled, InvalidRequest, OutOfMemory
from .loading import is_half, place, resolve_device, resolve_dtype
from .sources import load_diffusers
from .testing import TEXT_IMAGE_BUILT_IN
from .weights import TEXT_IMAGE_PIPELINES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextImageRequest:
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int

    def batch_key(self) -> tuple:
        """Requests with equal keys run as one pipeline call."""
        return (self.width, self.height, self.num_inference_steps, self.guidance_scale, self.negative_prompt is None)


@dataclass(frozen=True)
class TextImageResult:
    image: np.ndarray
    seed: int
    timings: dict[str, float]
    """Seconds of its pipeline call: preparing (text encoding), denoising, decoding (VAE)."""


@overload
def parse_prompt(name: str, value: Any, *, max_chars: int, required: Literal[True]) -> str: ...


@overload
def parse_prompt(name: str, value: Any, *, max_chars: int, required: bool) -> str | None: ...


def parse_prompt(name: str, value: Any, *, max_chars: int, required: bool) -> str | None:
    """A prompt as text: UTF-8, not blank, at most `max_chars` characters (InvalidRequest otherwise)."""
    if value is None:
        if required:
            raise InvalidRequest(name, f"{name} is required")
        return None
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(name, f"{name} is not valid UTF-8") from None
    if not isinstance(value, str):
        raise InvalidRequest(name, f"{name} must be text, got {type(value).__name__}")
    if len(value) > max_chars:
        raise InvalidRequest(name, f"{name} has {len(value)} characters; accepted: at most {max_chars}")
    if "\x00" in value:
        raise InvalidRequest(name, f"{name} contains a NUL character")
    if not value.strip():
        if required:
            raise InvalidRequest(name, f"{name} is empty; accepted: 1–{max_chars} characters of text")
        return None
    return value.strip()


class TextImageEngine(ResidentEngine):
    """One loaded text-to-image pipeline plus the deployment's defaults and limits; releasable like SVDEngine."""

    config_class = TextImageConfig

    @classmethod
    def load(cls, config: TextImageConfig) -> TextImageEngine:
        return cls(_load(config), config)

    def _reload(self) -> None:
        self.pipeline = _load(self.config)
        self.released = False

    def parse(self, prompt: Any, negative_prompt: Any = None, **params: Any) -> TextImageRequest:
        config = self.config
        unknown = sorted(set(params) - set(PARAMETERS))
        if unknown:
            raise InvalidRequest(unknown[0], f"unknown field; accepted: {', '.join((*PROMPTS, *PARAMETERS))}")
        values = {
            "width": config.default_width,
            "height": config.default_height,
            "num_inference_steps": config.default_num_inference_steps,
            "guidance_scale": config.default_guidance_scale,
            "seed": secrets.randbits(63),
        }
        highs = {"num_inference_steps": config.max_num_inference_steps}
        for name, value in params.items():
            values[name] = PARAMETERS[name].coerce(value, highs.get(name))
        if values["width"] * values["height"] > config.max_pixels:
            raise InvalidRequest(
                "width",
                f"width×height={values['width']}×{values['height']} exceeds this "
                f"deployment's max_pixels={config.max_pixels}",
            )
        return TextImageRequest(
            prompt=parse_prompt("prompt", prompt, max_chars=config.max_prompt_chars, required=True),
            negative_prompt=parse_prompt(
                "negative_prompt", negative_prompt, max_chars=config.max_prompt_chars, required=False
            ),
            **values,
        )

    def generate(
        self, requests: Sequence[TextImageRequest], cancelled: Callable[[int], bool] = lambda index: False
    ) -> list[TextImageResult | Exception]:
        """One result per request, in order: the image, or the exception that request ended with.

        Requests with the same size, steps and guidance share one pipeline call; a call stops at the
        next step once every request in it is cancelled.
        """
        results: dict[int, TextImageResult | Exception] = {}
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.batch_key(), []).append(index)
        with self._device_lock:
            self.restore()
            for indices in groups.values():

                def group_cancelled(group: list[int] = indices) -> bool:
                    return all(cancelled(i) for i in group)

                try:
                    images, timings = self._run([requests[i] for i in indices], group_cancelled)
                except (GenerationCancelled, OutOfMemory) as error:
                    images, timings = [error] * len(indices), {}
                for index, image in zip(indices, images):
                    if isinstance(image, Exception):
                        results[index] = image
                    elif cancelled(index):
                        results[index] = GenerationCancelled("the client cancelled the request")
                    else:
                        results[index] = TextImageResult(image=image, seed=requests[index].seed, timings=timings)
        return [results[index] for index in range(len(requests))]  # every request is in one group

    def _run(self, batch: list[TextImageRequest], all_cancelled: Callable[[], bool]):
        """(one H×W×3 uint8 image per request, the call's phase seconds)."""
        import torch

        first = batch[0]
        marks = {"start": time.perf_counter()}

        def check(pipeline, step, timestep, callback_kwargs):
            marks.setdefault("first_step", time.perf_counter())
            marks["last_step"] = time.perf_counter()
            if all_cancelled():
                raise GenerationCancelled(
                    f"the client cancelled the request after step {step + 1} of {first.num_inference_steps}"
                )
            return callback_kwargs

        if all_cancelled():
            raise GenerationCancelled("the client cancelled the request")
        negative = None if first.negative_prompt is None else [r.negative_prompt for r in batch]
        generators = [torch.Generator("cpu").manual_seed(r.seed) for r in batch]
        try:
            with torch.inference_mode():
                output = self.pipeline(
                    prompt=[r.prompt for r in batch],
                    negative_prompt=negative,
                    width=first.width,
                    height=first.height,
                    num_inference_steps=first.num_inference_steps,
                    guidance_scale=first.guidance_scale,
                    generator=generators,
                    output_type="np",
                    callback_on_step_end=check,
                )
        except torch.OutOfMemoryError:
            residency.release_memory(self.device)
            raise OutOfMemory(
                f"{len(batch)} image(s) of {first.width}×{first.height} do not fit in device memory"
            ) from None
        end = time.perf_counter()
        # The step callback runs after each step: text encoding and the first step count as preparing.
        timings = {
            "preparing": marks.get("first_step", end) - marks["start"],
            "denoising": marks.get("last_step", end) - marks.get("first_step", end),
            "decoding": end - marks.get("last_step", end),
        }
        return [(np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8) for image in output.images], timings


def _load(config: TextImageConfig):
    from diffusers import AutoPipelineForText2Image

    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    source = config.model_source
    pipeline = load_diffusers(
        AutoPipelineForText2Image,
        source,
        dtype=dtype,
        half=is_half(dtype),
        served=TEXT_IMAGE_PIPELINES,
        built_in=TEXT_IMAGE_BUILT_IN,
        device=device,
        hub_hint=f"Download it where the hub is reachable with `huggingface-cli download {source} --local-dir "
        "/models/text-to-image` and set the model source to that folder (TEXT_IMAGE_MODEL_SOURCE), or set "
        "HF_HOME to a cache that holds it; or serve svd_xt alone (`svd-triton serve --svd-only`).",
    )
    return place(pipeline, device, dtype)
