"""fal's documented inputs of its hosted SVD apps (fal-rs' endpoint types, fal-js' generated types, the apps'
llms.txt pages), with fal's per-app defaults, beside the model's own parameters under their own names; and the
answers of fal's queue as fal-client 1.0.3 reads them."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...schemas import CACHE_CONFLICTS, ImageOrURL, SVDParameters, _given, contract_range

RENAMED = {"steps": "num_inference_steps", "cond_aug": "noise_aug_strength"}
"""fal's names of two of the model's parameters (motion_bucket_id, seed and fps are the model's own)."""


def fal_field(name: str, kind: type, description: str) -> tuple[Any, ...]:
    """The metadata of a field of fal's with the range of the model's parameter `name`, of `kind`
    (`Annotated[kind, *fal_field(name, kind, description)]`); not nullable: fal's default stands in."""
    return (*contract_range(name, kind), Field(description=description))


def one_name_each(*fal_names: str) -> ConfigDict:
    """The JSON schema of FalInput._one_name_each and CacheSwitches' rule: no setting under two names."""
    conflicts = [_given(fal, RENAMED[fal]) for fal in fal_names]
    return ConfigDict(extra="forbid", json_schema_extra={"not": {"anyOf": [*conflicts, *CACHE_CONFLICTS]}})


class FalInput(SVDParameters):
    """What all three apps take: fal's fields, and any of the model's parameters by its own name (width, height,
    num_frames, ...: fal has none of them, its apps make 25 frames)."""

    model_config = one_name_each("cond_aug")
    default_preset: ClassVar[str | None] = None
    """The speed preset the app runs where the request names none (the fields it sets that the request leaves
    unset, fal's defaults included, are the preset's)."""
    image_url: ImageOrURL = Field(
        description="The first frame: a data URI (fal_client.encode_file), base64, a "
        "/v1/files URL of this gateway, or a URL on a host the gateway's allow-list permits."
    )
    motion_bucket_id: Annotated[int, *fal_field("motion_bucket_id", int, "Higher values move more.")] = 127
    cond_aug: Annotated[
        float,
        *fal_field(
            "noise_aug_strength",
            float,
            "noise_aug_strength: noise added to the conditioning frame (fal allows up to 10, the model 0–1).",
        ),
    ] = 0.02

    @model_validator(mode="after")
    def _one_name_each(self) -> Self:
        for fal, ours in RENAMED.items():
            if fal in self.model_fields_set and getattr(self, ours) is not None:
                raise ValueError(f"{fal} is fal's name of {ours}; give one")
        return self

    def parameters(self) -> dict[str, Any]:
        """The model's parameters: fal's names renamed, fal's defaults where neither name was given."""
        params = self.model_dump(exclude_none=True, exclude={"image_url", *RENAMED})
        for fal, ours in RENAMED.items():
            if getattr(self, fal, None) is not None:
                params.setdefault(ours, getattr(self, fal))
        if self.default_preset is not None:
            params.setdefault("preset", self.default_preset)
        return params


class FastSVDInput(FalInput):
    """fal-ai/fast-svd: SVD with DeepCache presets."""

    model_config = one_name_each("cond_aug", "steps")
    steps: Annotated[int, *fal_field("num_inference_steps", int, "Denoising steps: num_inference_steps.")] = 20
    fps: Annotated[int, *fal_field("fps", int, "Frames per second of the video.")] = 10


class FastSVDLCMInput(FalInput):
    """fal-ai/fast-svd-lcm ("Stable Video Diffusion Turbo"): fal runs an LCM-distilled SVD in few steps, without
    guidance; here the deployment's model runs them with the `fast` preset (Align Your Steps' schedule, made for
    few steps, and its last 4 steps, at fal's 4 every step, conditional-only): a request's own `preset` wins."""

    model_config = one_name_each("cond_aug", "steps")
    default_preset = "fast"
    steps: Annotated[
        int, *fal_field("num_inference_steps", int, "Denoising steps: num_inference_steps (fal: 1–20).")
    ] = 4
    fps: Annotated[int, *fal_field("fps", int, "Frames per second of the video.")] = 10


class StableVideoInput(FalInput):
    """fal-ai/stable-video: SVD at the deployment's steps (fal's schema has no `steps`)."""

    fps: Annotated[int, *fal_field("fps", int, "Frames per second of the video.")] = 25


APPS: dict[str, type[FalInput]] = {
    "fast-svd": FastSVDInput,
    "fast-svd-lcm": FastSVDLCMInput,
    "stable-video": StableVideoInput,
}
"""The apps served, under fal's owner `fal-ai`."""


class FalFile(BaseModel):
    url: str
    content_type: str
    file_name: str
    file_size: int


class FalVideo(BaseModel):
    """The output of all three apps."""

    video: FalFile
    seed: int


class QueueLinks(BaseModel):
    request_id: str
    response_url: str
    status_url: str
    cancel_url: str


class Submitted(QueueLinks):
    status: Literal["IN_QUEUE"]
    queue_position: int


class LogEntry(BaseModel):
    message: str
    level: Literal["DEBUG", "INFO", "WARN", "ERROR"]
    source: str
    timestamp: str


class QueueStatus(QueueLinks):
    """A failed or cancelled request is COMPLETED too, with `error` and `error_type`: fal-client knows no other."""

    status: Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    queue_position: int | None = Field(None, description="IN_QUEUE: how many requests are ahead.")
    logs: list[LogEntry] | None = Field(description="With logs=1 (or true); else null.")
    metrics: dict[str, float] | None = Field(None, description="COMPLETED: inference_time in seconds.")
    error: str | None = None
    error_type: str | None = None


class CancelStatus(BaseModel):
    status: Literal["CANCELLATION_REQUESTED", "ALREADY_COMPLETED"]
