"""The gateway's unit tier: a module's gateway in process, against a fake model client (no Triton, no server)."""
import pytest

from tests.support.fake_model import FakeModel, gateway_on


@pytest.fixture(scope="module")
def fake():
    return FakeModel()


@pytest.fixture(scope="module")
def client(fake, tmp_path_factory):
    """The module's gateway, driven in process with the test key (TestClient, its lifespan running)."""
    with gateway_on(fake, tmp_path_factory.mktemp("gateway")) as client:
        yield client
