"""Request bodies, built from the generated contract so every type, range and enum in the OpenAPI
document is the model's own; and cog-svd's input names mapped onto the model's parameters."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, create_model, model_validator

from svd_contract import PARAMETERS, VIDEO_FORMATS, Parameter
from .errors import GatewayError
from .spec import DEEP_CACHE_PRESETS, DEEPCACHE_INTERVAL


INT32_MAX = 2**31 - 1
"""The model's integer inputs are INT32 on the wire (SEED is INT64 and has its own bound)."""
QUALITY_RANGE = (min(f.quality_range[0] for f in VIDEO_FORMATS.values() if f.quality_range),
                 max(f.quality_range[1] for f in VIDEO_FORMATS.values() if f.quality_range))
"""video_quality's range depends on video_format; the schema states the union, the model the rest."""
# An image: base64 (optionally a data URI) in whole 4-character groups, or a URL (an upload to this gateway, or
# fetched from a host the allow-list permits: service.DataPlane.image).
BASE64_IMAGE = (r"^(data:[\w.+/-]+(;[\w=.+-]+)*;base64,)?"  # not empty: an empty image is refused
                r"(([A-Za-z0-9+/]{4})+([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)$")
UPLOAD_URL = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/v1/files/([a-z0-9]+)$"
HTTP_URL = r"^https?://[^\s/?#]+([/?#]\S*)?$"
"""An http(s) URL with a host: what a webhook or an image URL may look like (the allow-list decides the rest)."""
IMAGE_REFERENCE = BASE64_IMAGE + "|" + HTTP_URL
IMAGE_FORMAT = "image"
"""The `format` of each string field that holds an image: its pattern says how it is spelled, but that the bytes
decode as an image no JSON Schema can say. A fuzzer needs a generator for it, as for any format of one's own
(tests/support/fuzz_hooks.py registers one with schemathesis)."""
IMAGE_MEDIA_TYPES = "image/png, image/jpeg, image/webp"
"""The multipart `encoding` contentType of image file parts: what check_image accepts (and a fuzzer's media-type
generators fill)."""
WEBHOOK_FORMAT = "webhook-url"
"""The `format` of webhook fields: whether a host resolves to an address the allow-list permits is the
deployment's, which no document can say; a fuzzer supplies a host it runs (tests/support/fuzz_hooks.py)."""


def _formatted(pattern: str, format: str):
    return Annotated[str, Field(pattern=pattern, json_schema_extra={"format": format})]


Base64Image = _formatted(BASE64_IMAGE, IMAGE_FORMAT)
ImageOrURL = _formatted(IMAGE_REFERENCE, IMAGE_FORMAT)
WebhookURL = _formatted(HTTP_URL, WEBHOOK_FORMAT)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""What a model version, GPU type or region may look like; anything else is a 400, not a lookup."""


def _whole(value: Any) -> Any:
    """JSON has one kind of number: 64.0 is the integer 64 to JSON Schema (and to a fuzzer), which strict
    validation would refuse; strings and booleans stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def integer(**bounds):
    """An integer field of a body validated strictly (no "64", no true), as JSON Schema's `integer` reads it (the
    bounds first: after the validator pydantic would write them into the document under its own names)."""
    return Annotated[int, Field(**bounds), BeforeValidator(_whole)]


def _contract_field(parameter: Parameter):
    kind = Literal[parameter.choices] if parameter.choices else parameter.kind
    low, high = (QUALITY_RANGE if parameter.name == "video_quality" else (parameter.low, parameter.high))
    if parameter.kind is int and high is None:
        high = INT32_MAX
    bounds = {"ge": low, "le": high, "multiple_of": parameter.multiple_of if parameter.multiple_of > 1 else None,
              "allow_inf_nan": False if parameter.kind is float else None}
    bounds = {k: v for k, v in bounds.items() if v is not None}
    return (integer(**bounds) if parameter.kind is int else Annotated[kind, Field(**bounds)]) | None, None


def _given(*names: str, **schemas: dict) -> dict:
    """JSON schema: every one of `names` present and not null (and matching `schemas` where one is named)."""
    return {"required": list(names), "properties": {name: schemas.get(name, {"not": {"type": "null"}}) for name in names}}


CACHE_CONFLICTS = [
    *(_given("deep_cache", other) for other in ("cache_interval", "cache_branch_id", "enable_deepcache")),
    _given("enable_deepcache", "cache_interval", enable_deepcache={"const": False},
           cache_interval={"type": "integer", "minimum": 2}),
]
"""CacheSwitches._one_way_to_ask as JSON schema (each body's `not`), so what the document allows the API accepts."""


class CacheSwitches(BaseModel):
    """Other hosted APIs' feature-caching switches, mapped onto cache_interval and cache_branch_id."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"not": {"anyOf": CACHE_CONFLICTS}})
    deep_cache: Literal[tuple(DEEP_CACHE_PRESETS)] | None = Field(
        None, description="fal's preset: none, minimum, medium or high → cache_interval 1, 2, 3 or 5 (branch 0).")
    enable_deepcache: bool | None = Field(
        None, description=f"Replicate's switch: true caches at cache_interval (default {DEEPCACHE_INTERVAL}) and "
                          "cache_branch_id; false turns caching off.")

    @model_validator(mode="after")
    def _one_way_to_ask(self):
        explicit = [name for name in ("cache_interval", "cache_branch_id") if getattr(self, name, None) is not None]
        if self.deep_cache is not None and (explicit or self.enable_deepcache is not None):
            raise ValueError(f"deep_cache is a preset of cache_interval; give it or {explicit[0] if explicit else 'enable_deepcache'}, not both")
        if self.enable_deepcache is False and (getattr(self, "cache_interval", None) or 1) > 1:
            raise ValueError("enable_deepcache=false turns caching off, but cache_interval asks for it; give one")
        return self


SVDParameters = create_model("SVDParameters", __base__=CacheSwitches,
                             **{name: _contract_field(p) for name, p in PARAMETERS.items()})
SVDParameters.__doc__ = ("The model's optional parameters (bounds of None depend on the deployment) and other "
                         "APIs' caching switches.")


class PredictRequest(SVDParameters):
    """E2E TIR pre-built endpoint: a base64 image and optional SVD parameters."""

    image: Base64Image = Field(description="The image, base64 or a data:image/...;base64, URI.")


class _CatalogueBody(PredictRequest):
    """Fields that catalogue-style APIs send beside the SVD parameters. Without an image, a body with a
    prompt runs text-to-video (Triton's text_to_video model): VoltageGPU's sample sends only a prompt."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [_given("image"), _given("prompt")],
                                                "not": {"anyOf": CACHE_CONFLICTS}})

    image: Base64Image | None = Field(None, description="The image, base64 or a data:image/...;base64, "
                                      "URI; leave out and send a prompt for text-to-video.")
    model: str | None = None
    guidance_scale: _contract_field(PARAMETERS["max_guidance_scale"])[0] = None
    prompt: str | None = None


class ForgeRequest(_CatalogueBody):
    """Nebius Forge model catalogue: a data-URI image; prompt fields accepted and reported as ignored,
    target pins (model_version, gpu_type, region) that this deployment does not match reported as warnings."""

    negative_prompt: str | None = None
    model_version: str | None = Field(None, pattern=NAME_PATTERN)
    gpu_type: str | None = Field(None, pattern=NAME_PATTERN)
    region: str | None = Field(None, pattern=NAME_PATTERN)


class VideoGenerationRequest(_CatalogueBody):
    """OpenAI-style video generations."""

    response_format: Literal["url", "b64_json"] | None = None
    """`url`, `b64_json`, or unset for both."""


PROMPT_FIELDS = ("prompt", "negative_prompt")
# Catalogue fields that are accepted, reported as ignored, and not sent to the model (with an image;
# without one they are text_to_video's inputs).
IGNORED_FIELDS = {
    "prompt": "an image-to-video model takes no prompt; it was ignored",
    "negative_prompt": "an image-to-video model takes no prompt; it was ignored",
}
FORGE_PINS = ("model_version", "gpu_type", "region")
"""Forge body fields naming a target: never sent to the model; a mismatch is a warning (routers/forge.py)."""
NOT_PARAMETERS = {"image", "model", "response_format", *FORGE_PINS}


def model_parameters(body: BaseModel, defaults: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The model's parameters from a request body (other APIs' names included: spec.check_parameters resolves
    them), and warnings for the fields that were ignored."""
    params, warnings = dict(defaults), []
    text_to_video = getattr(body, "image", None) is None
    for name, value in body.model_dump(exclude_none=True, exclude=NOT_PARAMETERS).items():
        if name in IGNORED_FIELDS and not text_to_video:
            warnings.append(IGNORED_FIELDS[name])
        else:
            params[name] = value
    return params, warnings


# cog-svd (replicate.com/stability-ai/stable-video-diffusion) input names → ours.
VIDEO_LENGTHS = {"14_frames_with_svd": 14, "25_frames_with_svd_xt": 25}
SIZING_STRATEGIES = {"maintain_aspect_ratio": "crop", "crop_to_16_9": "crop", "use_image_dimensions": "keep"}
COG_NAMES = {"input_image": "image", "video_length": "num_frames", "sizing_strategy": "resize_mode",
             "frames_per_second": "fps", "cond_aug": "noise_aug_strength", "decoding_t": "decode_chunk_size"}
# What cog-svd does when a field is left out and our own name is not given either.
COG_DEFAULTS = {"num_frames": 14, "fps": 6}


class PredictionInput(SVDParameters):
    """A prediction's input: cog-svd's names (input_image, video_length, ...) or the model's own. Without an
    image, a prompt runs text-to-video; with one, a prompt is ignored (and said so in the logs)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={  # an image or a prompt; no setting under both names
        "anyOf": [_given("input_image"), _given("image"), _given("prompt")],
        "not": {"anyOf": [_given("input_image", "image")]
                + [_given(cog, ours) for cog, ours in COG_NAMES.items() if ours in PARAMETERS] + CACHE_CONFLICTS}})
    input_image: ImageOrURL | None = Field(None, description="The image: an uploaded file's URL, a data URI, base64, "
                                           "or a URL on a host the gateway's allow-list permits.")
    image: ImageOrURL | None = Field(None, description="Same as input_image.")
    prompt: str | None = Field(None, description="Without an image: the text the first frame is made from "
                               "(text-to-video). With an image: ignored.")
    negative_prompt: str | None = Field(None, description="Text-to-video: what the first frame should not show.")
    video_length: Literal[tuple(VIDEO_LENGTHS)] | None = None
    sizing_strategy: Literal[tuple(SIZING_STRATEGIES)] | None = None
    frames_per_second: integer(ge=5, le=30) | None = None
    cond_aug: _contract_field(PARAMETERS["noise_aug_strength"])[0] = None
    decoding_t: _contract_field(PARAMETERS["decode_chunk_size"])[0] = None


def prediction_parameters(given: PredictionInput) -> tuple[str | None, dict[str, Any], list[str]]:
    """The image reference (None: text-to-video), the model's parameters and notes on ignored fields of a
    prediction input; both names of one field → error."""
    values = given.model_dump(exclude_none=True)
    params: dict[str, Any] = {}
    for name, value in values.items():
        target = COG_NAMES.get(name, name)
        if target in params:
            raise GatewayError(422, "invalid_input", f"input.{name} and input.{target} name the same setting; give one",
                               f"input.{name}")
        params[target] = {"video_length": VIDEO_LENGTHS, "sizing_strategy": SIZING_STRATEGIES}.get(name, {}).get(value, value)
    image = params.pop("image", None)
    notes = []
    if image is None and "prompt" not in params:
        raise GatewayError(422, "invalid_input", "input.input_image: required (an image URL from /v1/files, a data URI "
                           "or base64), or a prompt alone for text-to-video", "input.input_image")
    if image is not None:
        notes = [f"input.{name}: {IGNORED_FIELDS[name]}" for name in PROMPT_FIELDS if params.pop(name, None) is not None]
    if "input_image" in values:  # a cog-svd request: cog-svd's defaults where it gave nothing
        params = {**COG_DEFAULTS, **params}
    return image, params, notes


# OpenAI's Videos API (routers/openai_videos.py): its own fields, the model's parameters as extra body fields.
class ImageReference(BaseModel):
    """OpenAI's `input_reference` object: an image URL or data URI, or a /v1/files id."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"anyOf": [_given("image_url"), _given("file_id")]})
    image_url: ImageOrURL | None = Field(None, description="A data:image/...;base64, URI (or base64), a /v1/files URL "
                                         "of this gateway, or a URL on a host the gateway's allow-list permits.")
    file_id: str | None = Field(None, pattern=r"^[a-z0-9]{1,32}$", description="An id from POST /v1/files.")


class VideoReference(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = Field(description="A completed video of this gateway.")


SECONDS_PER_CLIP = 4
"""Each 4 seconds asked is one chained clip (SVD-XT's 25 frames last 4.2 s at 6 fps, 3.6 s at 7)."""
SECONDS_TEXT = r"^([48]|[2468][048]|[13579][26]|[1-9][0-9]{0,6}([02468][048]|[13579][26]))$"
"""`seconds` as the SDK sends it: a multiple of 4 in decimal, no sign, no leading zero, at most 9 digits."""
MAX_SECONDS = 999_999_996
Seconds = Annotated[str | integer() | None, WithJsonSchema({"anyOf": [
    {"type": "string", "pattern": SECONDS_TEXT},
    {"type": "integer", "minimum": SECONDS_PER_CLIP, "maximum": MAX_SECONDS, "multipleOf": SECONDS_PER_CLIP},
    {"type": "null"}]}), Field(description="Multiples of 4: each 4 seconds asked is one chained clip (`segments`), "
                                           "up to the deployment's max_segments.")]
"""Checked by routers/openai_videos.clips, which names the values allowed; the document states the same."""
_SIDE = PARAMETERS["width"]
SIDE_TEXT = "(" + "|".join(str(v) for v in range(int(_SIDE.low), int(_SIDE.high) + 1, _SIDE.multiple_of)) + ")"
SIZE_TEXT = f"^{SIDE_TEXT}x{SIDE_TEXT}$"
"""`size`: WIDTHxHEIGHT, each side one the contract allows (the deployment's max_pixels may refuse more)."""
Size = Annotated[str | None, WithJsonSchema({"anyOf": [{"type": "string", "pattern": SIZE_TEXT}, {"type": "null"}]}),
                 Field(description="WIDTHxHEIGHT, e.g. 1024x576 (SVD's own) or 576x1024; sides multiples of "
                                   f"{_SIDE.multiple_of} in {_SIDE.low}–{_SIDE.high}, within the deployment's "
                                   "max_pixels.")]
"""Checked by routers/openai_videos.dimensions, which names the sizes allowed; the document states the same."""


class VideoCreateRequest(SVDParameters):
    """POST /v1/videos: OpenAI's fields, and any of the model's parameters (the SDK's `extra_body`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={  # no setting under both names
        "not": {"anyOf": [_given("seconds", "segments"), _given("size", "width"), _given("size", "height"),
                          *CACHE_CONFLICTS]}})

    prompt: str = Field(max_length=4000, description="Recorded with an image; without one, text-to-video from it.")
    negative_prompt: str | None = Field(None, max_length=4000, description="Text-to-video: what the first frame "
                                        "should not show.")
    input_reference: ImageReference | None = Field(None, description="The first frame (or a file part of that name "
                                                   "in multipart); without it, text-to-video.")
    model: str | None = Field(None, max_length=200, description="Recorded and echoed; this gateway serves one model.")
    seconds: Seconds = None
    size: Size = None
    video_format: Literal["mp4"] | None = Field(None, description="This API serves MP4.")


class VideoExtendRequest(BaseModel):
    """POST /v1/videos/extensions: the same request as the original with more clips chained after it. `video`
    is optional here because multipart sends it as a file part; the documented schemas require it."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=lambda schema: schema.update(
        required=["prompt", "seconds", "video"],
        properties={**schema["properties"], "video": {**schema["properties"]["video"]["anyOf"][0],
                                                      "description": schema["properties"]["video"]["description"]}}))
    prompt: str = Field(max_length=4000)
    seconds: Seconds
    video: VideoReference | None = Field(None, description="{id}, or a file part of that name in multipart: the "
                                         "bytes of a video this gateway made (as downloaded).")


class VideoRemixRequest(SVDParameters):
    """POST /v1/videos/{id}/remix: the original's input and settings with a new prompt (and a new seed unless
    one is given)."""

    prompt: str = Field(max_length=4000)


class StabilityRequest(SVDParameters):
    """Stability AI's POST /v2beta/image-to-video form fields (the `image` file beside them), and the model's
    parameters under their own names."""

    seed: integer(ge=0, le=4294967294) = Field(0, description="0: a random seed.")
    cfg_scale: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False,
                                      description="How strongly the video sticks to the image: max_guidance_scale.")] = 1.8
    motion_bucket_id: integer(ge=1, le=255) = Field(127, description="Higher values move more.")


def form_schema(model: type[BaseModel], files: dict[str, str]) -> dict[str, Any]:
    """`model` as a multipart/form-data body: a form field is never null (it is left out), and each of `files`
    (name → description) is a file part in place of the JSON field of that name."""
    schema = inline_schema(model)

    def present(node):
        if "anyOf" not in node:
            return node
        options = [option for option in node["anyOf"] if option != {"type": "null"}]
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
        return {**rest, **options[0]} if len(options) == 1 else {**rest, "anyOf": options}

    properties = {name: present(node) for name, node in schema["properties"].items()}
    properties.update({name: {"type": "string", "format": "binary", "description": text} for name, text in files.items()})
    return {**schema, "properties": properties}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its $defs written in place: for request bodies a route declares by hand
    (openapi_extra), whose local references would otherwise point nowhere in the OpenAPI document."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)
