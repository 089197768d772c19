"""Schemathesis generators for what the gateway's OpenAPI document names but no JSON Schema can describe, registered
the way schemathesis documents for formats and media types of one's own (`SCHEMATHESIS_HOOKS=tests.support.fuzz_hooks`):

- `format: image` (svd_gateway.schemas.IMAGE_FORMAT): a string whose bytes must decode as an image. The pattern
  says base64, a data URI or an http(s) URL; these give real PNG, JPEG and WebP images in each spelling, and URLs
  of them on the test's own server (`$SVD_FUZZ_SERVER`, on the gateway's allow-list).
- multipart parts of `image/png`, `image/jpeg`, `image/webp` (the `encoding` of every image file part).
- `format: webhook-url` (WEBHOOK_FORMAT): whether a host resolves to an address the allow-list permits is the
  deployment's; the test's server receives them.

The coverage phase draws boundary values from a pattern without its format ("http://0" for a webhook, "AA==" for
an image), so `map_case` gives every string of such a field that matches its pattern one of these values; a value
that does not match stays, so a negative case stays negative. Fuzzing sometimes fills a file part from
`format: binary` alone (schemathesis' file samples: a ZIP sent as image/png), so `map_case` also gives every
image file part that is not one of these images a real one (any bytes are valid for `format: binary`).

And `filter_failure`, for failures that are not the API's:
- a 503 from an operation that declares it: the model server is down on purpose (the hook's documented use:
  "an upstream returning 503"); every other 5xx still fails.
- a "schema-violating request accepted" (ST201) for a multipart form that was valid as sent. A form carries
  text, so a mutation to another type can arrive as a valid value ("true" is a string; an empty array sends
  nothing). Schemathesis 4.32.5 reads the form back as sent to spare exactly these, but gives up when a part is
  a file (its validator cannot read the bytes), and every form here has one; this reads it back with file parts
  as strings, which `format: binary` strings are.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
from email.parser import BytesParser
from email.policy import HTTP

import jsonschema
import schemathesis
from hypothesis import strategies as st
from PIL import Image

SERVER = os.environ.get("SVD_FUZZ_SERVER", "")
"""The test's HTTP server: serves /image.png and takes webhook POSTs at /hook."""
IMAGE_PATH = "/image.png"
WEBHOOK_PATH = "/hook"


def encoded(fmt: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buffer, fmt)
    return buffer.getvalue()


IMAGES = {f"image/{name.lower()}": [encoded(name, size) for size in ((64, 64), (96, 64))]
          for name in ("PNG", "JPEG", "WebP")}
IMAGE_STRINGS = [text for media_type, images in IMAGES.items() for data in images
                 for text in (base64.b64encode(data).decode(), f"data:{media_type};base64,{base64.b64encode(data).decode()}")]

for media_type, images in IMAGES.items():
    schemathesis.openapi.media_type(media_type, st.sampled_from(images))
schemathesis.openapi.format("image", st.sampled_from(IMAGE_STRINGS + ([SERVER + IMAGE_PATH] if SERVER else [])))
if SERVER:
    schemathesis.openapi.format("webhook-url", st.just(SERVER + WEBHOOK_PATH))
REAL_VALUES = {"image": IMAGE_STRINGS, "webhook-url": [SERVER + WEBHOOK_PATH] if SERVER else []}
"""Values of each format that every spelling its fields' patterns allow can be replaced with."""


@schemathesis.hook
def map_case(context, case):
    """Strings of `format: image` / `webhook-url` fields that match their pattern become real values (see above)."""
    if isinstance(case.body, dict) and case.media_type in ("application/json", "multipart/form-data"):
        document = case.operation.schema.raw_schema
        content = case.operation.definition.raw.get("requestBody", {}).get("content", {})
        if case.media_type in content:
            _make_real(case.body, content[case.media_type]["schema"], document)
            for name, encoding in content[case.media_type].get("encoding", {}).items():
                images = [IMAGES.get(kind.strip()) for kind in encoding.get("contentType", "").split(",")]
                data = getattr(case.body.get(name), "data", case.body.get(name))
                if isinstance(data, bytes) and all(images) and not any(data in found for found in images):
                    case.body[name] = images[0][0]
    return case


def _make_real(body: dict, schema: dict, document: dict) -> None:
    schema = _resolved(schema, document)
    for name, value in body.items():
        options = [_resolved(option, document) for option in _resolved(schema.get("properties", {}).get(name, {}),
                                                                          document).get("anyOf", [])]
        options = options or [_resolved(schema.get("properties", {}).get(name, {}), document)]
        for option in options:
            real = REAL_VALUES.get(option.get("format"), [])
            if isinstance(value, str) and real and value not in real and re.search(option.get("pattern", ""), value):
                body[name] = real[sum(value.encode()) % len(real)]
            elif isinstance(value, dict) and option.get("type") == "object":
                _make_real(value, option, document)


def _resolved(schema: dict, document: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        node = document
        for key in schema["$ref"].lstrip("#/").split("/"):
            node = node[key]
        schema = node
    return schema if isinstance(schema, dict) else {}


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """Keep every failure but a declared 503 and a multipart form that was valid as sent (the module's docstring)."""
    if failure.code == "ST101":
        return not (response.status_code == 503 and "503" in case.operation.definition.raw.get("responses", {}))
    if failure.code == "ST201" and case.media_type == "multipart/form-data":
        return not form_valid_as_sent(case, response)
    return True


def form_valid_as_sent(case, response) -> bool:
    content_type = response.request.headers.get("Content-Type", "")
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode()
                                                  + response.request.body)
    sent: dict[str, list] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        text = "" if part.get_filename() is not None else part.get_payload(decode=True).decode(errors="replace")
        sent.setdefault(name, []).append(text)
    document = case.operation.schema.raw_schema
    schema = case.operation.definition.raw["requestBody"]["content"]["multipart/form-data"]["schema"]
    if any(len(values) > 1 for name, values in sent.items() if name in _resolved(schema, document)["properties"]):
        return False  # the gateway refuses a field it reads given twice
    validator = jsonschema.Draft202012Validator({**schema, "components": document.get("components", {})})
    form = {}
    for name, (text, *_) in sent.items():  # a server reads text as the declared type when it can
        readings = [text] + ([json.loads(text)] if _is_json(text) else [])
        form[name] = next((reading for reading in readings
                           if not any(error.path and error.path[0] == name
                                      for error in validator.iter_errors({**form, name: reading}))), text)
    return validator.is_valid(form)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False
