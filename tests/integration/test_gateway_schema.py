"""The OpenAPI document is true: Schemathesis generates requests from the gateway's own schema, and
bodies the schema allows are never refused as invalid nor answered with a server error (Triton is down
here on purpose, so a valid synchronous request ends 503 and a valid prediction 201: this checks the
gateway's contract, not generations). Bodies the schema forbids are refused with 400/422."""
from __future__ import annotations

import re

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.support import TOKEN
from tests.support.gateways import Gateway
from svd_gateway.routers.forge import SLUG
from svd_gateway import Settings
from svd_triton.launcher import free_port

AUTH = {"Authorization": f"Bearer {TOKEN}"}
FUZZED = "^/(predict|v1/models/\\{model\\}:predict|v1/inference/\\{slug\\}|v1/video/generations|v1/predictions)$"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with Gateway(Settings(triton_url=f"127.0.0.1:{free_port()}", token=TOKEN,
                          data_dir=tmp_path_factory.mktemp("schema"))) as running:
        yield running


def json_exact(node):
    """The document with integer bounds beyond 2^53 lowered to 2^53. FastAPI writes bounds as floats, so
    the seed's 2^63−1 reads as 2^63, and the generator then sends 2^63, which the API rightly refuses."""
    if isinstance(node, dict):
        return {key: (min(value, 2.0**53) if key == "maximum" and node.get("type") == "integer" else json_exact(value))
                for key, value in node.items()}
    return [json_exact(item) for item in node] if isinstance(node, list) else node


def operations(gateway) -> dict:
    document = httpx.get(f"{gateway.url}/openapi.json", timeout=30).json()
    api = schemathesis.openapi.from_dict(json_exact(document))
    found = {}
    for result in api.get_all_operations():
        operation = result.ok()
        if operation.method.upper() == "POST" and re.match(FUZZED, operation.path):
            found[operation.path] = operation
    return found


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_what_the_schema_allows_is_accepted_and_what_it_forbids_is_refused(gateway, mode):
    found = operations(gateway)
    assert len(found) == 5, sorted(found)
    for path, operation in found.items():
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case):
            if isinstance(case.body, dict):  # an allow-list decides webhook targets; the schema cannot say which
                case.body.pop("webhook", None)
                case.body.pop("webhook_completed", None)
            response = case.call(base_url=gateway.url, headers=AUTH, timeout=30)
            context = (path, case.body if not isinstance(case.body, dict) else {k: str(v)[:80] for k, v in case.body.items()},
                       response.status_code, response.text[:300])
            assert response.status_code < 500 or response.json()["error"]["code"] == "unavailable", context
            if mode == GenerationMode.POSITIVE:  # the schema cannot know which uploads exist
                missing_upload = response.status_code == 422 and "no uploaded file" in response.text
                assert response.status_code in (201, 503) or missing_upload, context
            else:  # a slug the schema does not list is an unknown resource: 404 naming it (the Forge routes)
                unknown_slug = response.status_code == 404 and (case.path_parameters or {}).get("slug") != SLUG
                assert response.status_code in (400, 422, 201, 503) or unknown_slug, context

        check()
