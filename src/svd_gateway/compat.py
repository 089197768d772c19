"""Workarounds for defects of the gateway's dependencies, each naming the release it is for.

- FastAPI 0.165.0 writes every `minimum`/`maximum`/`multipleOf` of the OpenAPI document as a float: its
  OpenAPI model types them `float` (fastapi.openapi.models.Schema; fastapi#9517, which would have kept
  ints, was closed unmerged). An integer field's bounds then read 255.0, and the seed's 2^63−1 reads
  9.223372036854776e18, that is 2^63, so a fuzzer following the document sends 2^63 and is refused.
  `exact_integer_bounds` gives integer schemas their bounds back as the ints pydantic wrote.
- httpx 0.29.0 (over httpcore 1.0.9): `AsyncHTTPTransport` takes no `network_backend`, so a transport cannot
  choose how its TCP connections are opened (the gateway's outbound connections go to checked addresses
  only). `transport_over` replaces the pool it builds (its private `_pool`) with httpcore's own pool, with
  httpx's TLS and pool defaults and the given backend; the tests that record every outbound connection
  (tests/integration/test_outbound_pinning.py) fail if a later httpx stops using `_pool`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx
from fastapi import FastAPI

BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
EXACT_FLOATS = 2**53
"""Every int up to here is a float exactly, so int(float) gives it back; beyond, floats round."""


def exact_integer_bounds(document: dict[str, Any], large: Iterable[int]) -> dict[str, Any]:
    """`document` (in place) with each integer schema's float bounds as ints: below 2^53 the float's own value,
    beyond it the one of `large` (the ints the gateway declares there) that rounds to it."""
    by_float = {float(value): value for value in large}

    def exact(value: float) -> int:
        if abs(value) < EXACT_FLOATS:
            return int(value)
        if value not in by_float:
            raise ValueError(f"an integer bound of {value!r} in the OpenAPI document matches no declared bound")
        return by_float[value]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "integer":
                node.update({key: exact(node[key]) for key in BOUNDS if isinstance(node.get(key), float)})
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return document


def openapi_with_exact_integers(app: FastAPI, large: Iterable[int]) -> Callable[[], dict[str, Any]]:
    """A replacement for `app.openapi` that builds FastAPI's document once and mends its integer bounds."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = exact_integer_bounds(build(), large)
        return app.openapi_schema

    return openapi


def transport_over(network: httpcore.AsyncNetworkBackend) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections `network` opens; no proxies from the environment."""
    tls = httpx.create_ssl_context(trust_env=False)
    transport = httpx.AsyncHTTPTransport(verify=tls, trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=tls,
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=network,
    )
    return transport
