"""uvicorn's access records lose the secrets in their paths (the signed-link case through a real gateway:
tests/integration/test_accounts.py)."""
import logging

import pytest

from svd_gateway.access_log import RedactedPaths


@pytest.mark.parametrize("path, logged", [
    ("/v1/outputs/abc123_1796667420_0f1e2d3c4b5a69788796a5b4c3d2e1f0.webm", "/v1/outputs/abc123_1796667420_….webm"),
    ("/fal-ai/fast-svd?fal_webhook=https://hooks.example/t/s3cret&x=1", "/fal-ai/fast-svd?fal_webhook=…&x=1"),
    ("/v1/predictions/abc123", "/v1/predictions/abc123"),
])
def test_an_access_record_keeps_its_path_without_the_secret(path, logged):
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", path, "1.1", 200), None)
    assert RedactedPaths().filter(record) is True
    assert record.getMessage() == f'127.0.0.1:5000 - "GET {logged} HTTP/1.1" 200'
