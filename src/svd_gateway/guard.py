"""Authentication before any body byte is read, then the body limit and deadline enforced while reading.

The key a request presents is resolved into its principal (accounts.Keyring, the lifespan's), which routes read
as `request.state.principal` (deps.Caller); a key that resolves to none is answered 401 before the route runs.

A pure ASGI middleware: a declared Content-Length over the limit is answered 413 at once; a chunked or
undeclared body is counted as it arrives and the read fails with 413 the moment it passes the limit,
so nothing larger is ever buffered. A body that trickles in longer than `body_seconds` gets 408.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ErrorShapes, GatewayError, error_response

log = logging.getLogger("svd_gateway.guard")

PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/v1/parameters"})
"""Paths anyone may read, matched exactly: health and readiness, API docs, the parameters' ranges and the
playground page (its key is typed into it)."""
PUBLIC_FOLDERS = ("/playground/", "/v1/outputs/")
"""Folders whose direct entries anyone may read (one path segment below, no further `/`): the playground's
assets, and outputs (their signed, expiring link is the credential: jobs.output_url)."""


def is_public(path: str) -> bool:
    """Exact matches only, so a route added later (`/metrics-admin`, `/docs-private`) is guarded by default."""
    if path in PUBLIC_PATHS:
        return True
    folder, _, name = path.rpartition("/")
    return f"{folder}/" in PUBLIC_FOLDERS and bool(name)


AUTH_SCHEMES = ("bearer", "key")
"""`Authorization: Bearer KEY` (most APIs), or `Key KEY` (fal's clients)."""


def presented_key(authorization: str) -> str | None:
    """The key an Authorization header presents, in either scheme; None without one."""
    scheme, _, key = authorization.partition(" ")
    return key.strip() or None if scheme.lower() in AUTH_SCHEMES else None


class Guard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_seconds: float, shapes: ErrorShapes):
        self.app, self.shapes = app, shapes
        self.max_body_bytes = max_body_bytes
        self.body_seconds = body_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if not is_public(scope["path"]):
            keyring = scope["state"]["gateway"].keyring
            try:
                principal = await keyring.principal(presented_key(headers.get("authorization", "")))
            except SQLAlchemyError:
                log.exception("looking up a key failed")
                return await self._answer(
                    scope, receive, send, 503, "unavailable", "the gateway cannot check keys now; try again", {}
                )
            scope["state"]["principal"] = principal
            if principal is None:
                return await self._answer(
                    scope,
                    receive,
                    send,
                    401,
                    "unauthorized",
                    "missing, wrong, revoked or expired API key",
                    {"WWW-Authenticate": "Bearer", "Connection": "close"},
                )
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return await self._answer(
                scope,
                receive,
                send,
                413,
                "too_large",
                f"request body over {self.max_body_bytes} bytes",
                {"Connection": "close"},
            )
        await self.app(scope, self._limited(receive), send)

    def _limited(self, receive: Receive) -> Receive:
        received, complete = 0, False
        deadline = time.monotonic() + self.body_seconds

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body: waiting for a disconnect is not limited
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise GatewayError(
                    408, "timeout", f"the request body did not arrive within {self.body_seconds:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise GatewayError(413, "too_large", f"request body over {self.max_body_bytes} bytes")
                complete = not message.get("more_body", False)
            return message

        return limited_receive

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str, headers: dict
    ) -> None:
        render = self.shapes.for_path(scope["path"])
        await error_response(status, code, message, headers=headers, render=render)(scope, receive, send)
