"""What the catalogue-style families share (E2E TIR, Nebius Forge, OpenAI-style generations): a base64 image, or a
prompt alone for text-to-video, with the model's parameters beside it, answered on the line. Each family's body
extends `ImageBody` or `CatalogueBody`, and `catalogue_spec` translates it."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import ConfigDict, Field

from .accounts import Principal
from .errors import GatewayError
from .schemas import CACHE_CONFLICTS, IGNORED_FIELDS, Base64Image, SVDParameters, _given, contract_range
from .spec import JobSpec

if TYPE_CHECKING:
    from .service import DataPlane


class ImageBody(SVDParameters):
    """A base64 image and the model's optional parameters."""

    image: Base64Image = Field(description="The image, base64 or a data:image/...;base64, URI.")


class CatalogueBody(ImageBody):
    """Fields that catalogue-style APIs send beside the SVD parameters. Without an image, a body with a
    prompt runs text-to-video (Triton's text_to_video model): VoltageGPU's sample sends only a prompt."""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [_given("image"), _given("prompt")], "not": {"anyOf": CACHE_CONFLICTS}}
    )

    # Optional here, required in ImageBody: a subclass that widens a field is what pydantic allows and mypy refuses.
    image: Base64Image | None = Field(  # type: ignore[assignment]
        None,
        description="The image, base64 or a data:image/...;base64, URI; leave out and send a prompt for text-to-video.",
    )
    model: str | None = None
    guidance_scale: Annotated[float, *contract_range("max_guidance_scale", float)] | None = None
    prompt: str | None = None


async def catalogue_spec(
    origin: str,
    body: ImageBody,
    plane: DataPlane,
    caller: Principal,
    *,
    defaults: dict[str, Any] | None = None,
    own: AbstractSet[str] = frozenset(),
) -> tuple[JobSpec, list[str]]:
    """The job of a catalogue body (its family's own fields, `own`, left out of the parameters), and warnings for
    the fields the model ignored."""
    prompt = getattr(body, "prompt", None)
    if body.image is None and prompt is None:
        raise GatewayError(
            400, "invalid_request", "image: Field required (or send a prompt alone for text-to-video)", "image"
        )
    image = b"" if body.image is None else await plane.image(body.image, "image", caller)
    params, warnings = dict(defaults or {}), []
    for name, value in body.model_dump(exclude_none=True, exclude={"image", "model", *own}).items():
        if name in IGNORED_FIELDS and image:
            warnings.append(IGNORED_FIELDS[name])
        else:
            params[name] = value
    return JobSpec(origin, image, params, echo=body.model_dump(exclude_none=True, exclude={"image"})), warnings
