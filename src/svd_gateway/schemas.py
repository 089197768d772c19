"""Request bodies, built from the generated contract so every type, range and enum in the OpenAPI
document is the model's own; and cog-svd's input names mapped onto the model's parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator
from pydantic.config import JsonDict, JsonValue
from pydantic.fields import FieldInfo

from svd_contract import PARAMETERS, VIDEO_FORMATS, Parameter

from .spec import DEEPCACHE_INTERVAL, DeepCachePreset

INT32_MAX = 2**31 - 1
"""The model's integer inputs are INT32 on the wire (SEED is INT64 and has its own bound)."""
QUALITY_RANGE = (
    min(f.quality_range[0] for f in VIDEO_FORMATS.values() if f.quality_range),
    max(f.quality_range[1] for f in VIDEO_FORMATS.values() if f.quality_range),
)
"""video_quality's range depends on video_format; the schema states the union, the model the rest."""
# An image: base64 (optionally a data URI) in whole 4-character groups, or a URL (an upload to this gateway, or
# fetched from a host the allow-list permits: service.DataPlane.image).
BASE64_IMAGE = (
    r"^(data:[\w.+/-]+(;[\w=.+-]+)*;base64,)?"  # not empty: an empty image is refused
    r"(([A-Za-z0-9+/]{4})+([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)$"
)
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


def _formatted(pattern: str, format: str) -> FieldInfo:
    """The metadata of a string field spelled as `pattern`, with `format` in its JSON schema."""
    return Field(pattern=pattern, json_schema_extra={"format": format})


Base64Image = Annotated[str, _formatted(BASE64_IMAGE, IMAGE_FORMAT)]
ImageOrURL = Annotated[str, _formatted(IMAGE_REFERENCE, IMAGE_FORMAT)]
WebhookURL = Annotated[str, _formatted(HTTP_URL, WEBHOOK_FORMAT)]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""What a model version, GPU type or region may look like; anything else is a 400, not a lookup."""


def _whole(value: Any) -> Any:
    """JSON has one kind of number: 64.0 is the integer 64 to JSON Schema (and to a fuzzer), which strict
    validation would refuse; strings and booleans stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def whole(**bounds: Any) -> tuple[FieldInfo, BeforeValidator]:
    """The metadata of an integer field of a body validated strictly (no "64", no true), as JSON Schema's `integer`
    reads it: `Annotated[int, *whole(ge=1)]` (the bounds first: after the validator pydantic would write them into
    the document under its own names)."""
    return Field(**bounds), BeforeValidator(_whole)


def _contract_bounds(parameter: Parameter) -> dict[str, Any]:
    low, high = QUALITY_RANGE if parameter.name == "video_quality" else (parameter.low, parameter.high)
    if parameter.kind is int and high is None:
        high = INT32_MAX
    bounds = {
        "ge": low,
        "le": high,
        "multiple_of": parameter.multiple_of if parameter.multiple_of > 1 else None,
        "allow_inf_nan": False if parameter.kind is float else None,
    }
    return {k: v for k, v in bounds.items() if v is not None}


def contract_range(name: str, kind: type) -> tuple[Any, ...]:
    """The metadata of a field with the range of the model's parameter `name`, whose `kind` the field states (so
    the type checker sees it): `Annotated[float, *contract_range("noise_aug_strength", float)]`. A `kind` that is
    not the contract's is a TypeError at import."""
    parameter = PARAMETERS[name]
    if parameter.kind is not kind or parameter.choices:
        raise TypeError(f"{name} is a {parameter.kind.__name__} parameter of the contract, not a {kind.__name__}")
    bounds = _contract_bounds(parameter)
    return whole(**bounds) if kind is int else (Field(**bounds),)


def _contract_field(parameter: Parameter) -> tuple[Any, None]:
    """A create_model field definition of the model's parameter: optional, its type and range the contract's."""
    kind = Literal[parameter.choices] if parameter.choices else parameter.kind
    bounds = _contract_bounds(parameter)
    field = Annotated[int, *whole(**bounds)] if parameter.kind is int else Annotated[kind, Field(**bounds)]
    return field | None, None


def _given(*names: str, **schemas: JsonDict) -> JsonDict:
    """JSON schema: every one of `names` present and not null (and matching `schemas` where one is named)."""
    return {
        "required": list(names),
        "properties": {name: schemas.get(name, {"not": {"type": "null"}}) for name in names},
    }


CACHE_CONFLICTS: list[JsonValue] = [
    *(_given("deep_cache", other) for other in ("cache_interval", "cache_branch_id", "enable_deepcache")),
    _given(
        "enable_deepcache",
        "cache_interval",
        enable_deepcache={"const": False},
        cache_interval={"type": "integer", "minimum": 2},
    ),
]
"""CacheSwitches._one_way_to_ask as JSON schema (each body's `not`), so what the document allows the API accepts."""


class CacheSwitches(BaseModel):
    """Other hosted APIs' feature-caching switches, mapped onto cache_interval and cache_branch_id."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"not": {"anyOf": CACHE_CONFLICTS}})
    deep_cache: DeepCachePreset | None = Field(
        None, description="fal's preset: none, minimum, medium or high → cache_interval 1, 2, 3 or 5 (branch 0)."
    )
    enable_deepcache: bool | None = Field(
        None,
        description=f"Replicate's switch: true caches at cache_interval (default {DEEPCACHE_INTERVAL}) and "
        "cache_branch_id; false turns caching off.",
    )

    @model_validator(mode="after")
    def _one_way_to_ask(self) -> Self:
        explicit = [name for name in ("cache_interval", "cache_branch_id") if getattr(self, name, None) is not None]
        if self.deep_cache is not None and (explicit or self.enable_deepcache is not None):
            raise ValueError(
                f"deep_cache is a preset of cache_interval; give it or "
                f"{explicit[0] if explicit else 'enable_deepcache'}, not both"
            )
        if self.enable_deepcache is False and (getattr(self, "cache_interval", None) or 1) > 1:
            raise ValueError("enable_deepcache=false turns caching off, but cache_interval asks for it; give one")
        return self


if TYPE_CHECKING:

    class SVDParameters(CacheSwitches):
        """What the type checker sees of the model built below from the contract (which it cannot follow): a body
        of CacheSwitches whose parameter fields are read through model_dump."""

else:
    SVDParameters = create_model(
        "SVDParameters", __base__=CacheSwitches, **{name: _contract_field(p) for name, p in PARAMETERS.items()}
    )
    SVDParameters.__doc__ = (
        "The model's optional parameters (bounds of None depend on the deployment) and other APIs' caching switches."
    )


PROMPT_FIELDS = ("prompt", "negative_prompt")
# Fields that are accepted, reported as ignored, and not sent to the model (with an image; without one they are
# text_to_video's inputs).
IGNORED_FIELDS = {
    "prompt": "an image-to-video model takes no prompt; it was ignored",
    "negative_prompt": "an image-to-video model takes no prompt; it was ignored",
}


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
    properties.update(
        {name: {"type": "string", "format": "binary", "description": text} for name, text in files.items()}
    )
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
