"""The OpenAPI document is true: Schemathesis generates requests from the gateway's own schema, and
bodies the schema allows are never refused as invalid nor answered with a server error (Triton is down
here on purpose, so a valid synchronous request ends 503 and a valid prediction 201: this checks the
gateway's contract, not generations). Bodies the schema forbids are refused with 400/422."""
from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from conftest import TOKEN
from gateways import Gateway
from svd_triton.gateway import Settings
from svd_triton.launcher import free_port

AUTH = {"Authorization": f"Bearer {TOKEN}"}
FUZZED = "^/(predict|v1/models/\\{model\\}:predict|v1/inference/\\{slug\\}|v1/video/generations|v1/predictions)$"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with Gateway(Settings(triton_url=f"127.0.0.1:{free_port()}", token=TOKEN,
                          data_dir=tmp_path_factory.mktemp("schema"))) as running:
        yield running


def operations(gateway) -> dict:
    api = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
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
            else:
                assert response.status_code in (400, 422, 201, 503), context

        check()
