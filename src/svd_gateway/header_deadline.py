"""How the gateway is served: uvicorn, with a deadline on each request's line and headers.

uvicorn closes idle keep-alive connections, but not one that sends a request's headers a byte at a
time (slow-loris): every byte cancels its keep-alive timer, and a new connection has none. The guard
bounds the body (`body_seconds`); `HeaderDeadline` bounds what comes before it.
"""

from __future__ import annotations

import asyncio
import functools

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import Settings

TIMEOUT_REPLY = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol; a request whose line and headers take over `header_seconds` gets 408 and
    the connection is closed."""

    def __init__(self, *args, header_seconds: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_seconds = header_seconds
        self.header_clock: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._start_clock()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in
            self._stop_clock()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # waiting for the next request
            self._start_clock()

    def connection_lost(self, exc) -> None:
        self._stop_clock()
        super().connection_lost(exc)

    def _start_clock(self) -> None:
        self._stop_clock()
        self.header_clock = self.loop.call_later(self.header_seconds, self._headers_too_slow)

    def _stop_clock(self) -> None:
        if self.header_clock is not None:
            self.header_clock.cancel()
            self.header_clock = None

    def _headers_too_slow(self) -> None:
        self.header_clock = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.write(TIMEOUT_REPLY)
            self.transport.close()


def server_options(settings: Settings) -> dict:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` that serve the gateway as `settings` say."""
    tls = (
        {"ssl_certfile": str(settings.tls_certfile), "ssl_keyfile": str(settings.tls_keyfile)}
        if settings.tls_certfile
        else {}
    )
    return {
        "http": functools.partial(HeaderDeadline, header_seconds=settings.header_seconds),
        # in-flight requests get the job runner's drain time to be answered, then are cut off
        "timeout_graceful_shutdown": int(settings.drain_seconds) + 5,
        **tls,
    }
