"""The integration tier's one gateway fixture: each module gets a real gateway (in a thread, on a free port, with
a store of its own) in the configuration it names by overriding `gateway_triton` and `gateway_options`."""
from __future__ import annotations

import pytest

from svd_gateway import Settings
from svd_triton.launcher import free_port
from tests.support import TOKEN
from tests.support.gateways import Gateway, settings_for


@pytest.fixture(scope="module")
def gateway_triton() -> str | None:
    """The session tritonserver this module's gateway talks to: `triton_stream` (progress in job logs), `triton`,
    or None for a gateway whose Triton is nowhere (everything before a generation is real)."""
    return "triton_stream"


@pytest.fixture(scope="module")
def gateway_options() -> dict:
    """The Settings this module's gateway differs by."""
    return {}


@pytest.fixture(scope="module")
def gateway(request, tmp_path_factory, gateway_triton, gateway_options):
    data_dir = tmp_path_factory.mktemp("gateway")
    if gateway_triton is None:
        settings = Settings(triton_url=f"127.0.0.1:{free_port()}", token=TOKEN, data_dir=data_dir, **gateway_options)
    else:
        settings = settings_for(request.getfixturevalue(gateway_triton), data_dir, **gateway_options)
    with Gateway(settings) as running:
        yield running
