"""Outbound connections (image URLs, webhooks) go to the address the allow-list checked and nowhere else, with
real servers on 127.0.0.1: a DNS answer that changes between the check and the connect (rebinding) reaches
nothing, a redirect to loopback is refused as it connects, the name still reaches the server (Host, TLS SNI),
slow or endless webhook replies cannot hold a delivery, and logs keep a webhook URL's token out.

Every test injects the resolver and the network: the network opens real connections to 127.0.0.1 only, and
records every address a connection is opened to, failing the others without touching them."""
from __future__ import annotations

import asyncio
import base64
import logging
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpcore
import pytest
from prometheus_client import CollectorRegistry, Counter

from svd_gateway.accounts import BOOTSTRAP_OWNER
from svd_gateway.errors import GatewayError
from svd_gateway.outbound import AllowList, ImageFetcher
from svd_gateway.webhooks import REPLY_CAP, Webhooks
from tests.support import QuietHandler, http_server

PUBLIC = "93.184.216.34"
"""A public address the tests' network never really connects to."""
PNG = b"\x89PNG\r\n\x1a\n not decoded here"
SIGNING_KEY = "whsec_" + base64.b64encode(b"k" * 32).decode()
TIMEOUT = 2.0


class Network(httpcore.AnyIOBackend):
    """The real network for 127.0.0.1 only; records every (address, port) a connection is opened to."""

    def __init__(self):
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, **options) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if host != "127.0.0.1":
            raise httpcore.ConnectError(f"{host} is outside this test's network")
        return await super().connect_tcp(host, port, **options)


class Resolver:
    """Answers names from `answers`, except `rebinding`: its first answer is PUBLIC and every later one
    127.0.0.1 (DNS rebinding). Records every name it is asked."""

    def __init__(self, answers: dict[str, str] | None = None, rebinding: str | None = None):
        self.answers, self.rebinding = answers or {}, rebinding
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host == self.rebinding:
            return [PUBLIC if self.calls.count(host) == 1 else "127.0.0.1"]
        return [self.answers[host]]


def recording_handler(status: int = 200):
    """A handler class answering /redirect?to=URL with a redirect there, anything else with `status` (and a
    body); its `seen` lists the (path, Host header) of each request."""
    seen: list[tuple[str, str]] = []

    class Recording(QuietHandler):
        def do_GET(self):
            seen.append((self.path, self.headers["host"]))
            self.rfile.read(int(self.headers["content-length"] or 0))
            if self.path.startswith("/redirect?to="):
                self.send_response(302)
                self.send_header("location", self.path.split("=", 1)[1])
                self.send_header("content-length", "0")
                self.end_headers()
                return
            self.send_response(status)
            self.send_header("content-length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

        do_POST = do_GET

    Recording.seen = seen
    return Recording


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def fetch(allow: AllowList, url: str) -> bytes | GatewayError:
    async def run():
        fetcher = ImageFetcher(allow, max_bytes=1 << 20, seconds=10)
        try:
            return await fetcher.fetch(url, "input.image")
        except GatewayError as error:
            return error
        finally:
            await fetcher.close()
    return asyncio.run(run())


def test_an_image_url_connects_to_the_address_checked_not_to_a_new_answer():
    """The name resolves once, to PUBLIC, and the connection goes to PUBLIC: resolving it again to connect
    would have reached the loopback server (the system resolves `localhost` there too)."""
    handler, network, resolver = recording_handler(), Network(), Resolver(rebinding="localhost")
    allow = AllowList((), resolve=resolver, network=network)
    with http_server(handler) as server:
        failed = fetch(allow, f"http://localhost:{port_of(server)}/image.png")
    assert isinstance(failed, GatewayError) and failed.status_code == 400 and failed.field == "input.image"
    assert network.connects == [(PUBLIC, port_of(server))] and resolver.calls == ["localhost"]
    assert handler.seen == []


def test_a_webhook_connects_to_the_address_checked_and_each_attempt_checks_again(caplog):
    """The first attempt resolves the name to PUBLIC and connects there (failing, in this test's network); the
    retry resolves again, sees loopback, and sends nothing. The loopback server is never reached."""
    handler, network, resolver = recording_handler(), Network(), Resolver(rebinding="localhost")
    caplog.set_level(logging.INFO, logger="svd_gateway")
    with http_server(handler) as server:
        webhooks, registry = webhooks_with(AllowList((), resolve=resolver, network=network), attempts=2)
        asyncio.run(completed(webhooks, f"http://localhost:{port_of(server)}/hook"))
    assert outcome(registry) == "failed" and handler.seen == []
    assert network.connects == [(PUBLIC, port_of(server))] and resolver.calls == ["localhost", "localhost"]
    assert "not sent: localhost is a private, loopback or reserved address" in caplog.text


def test_a_redirect_hop_connects_to_the_address_checked():
    """A redirect is a new connection, checked the same way: the hop's name resolves once, to PUBLIC, and the
    loopback server the system would resolve it to is never reached."""
    images, inside, network = recording_handler(), recording_handler(), Network()
    allow = AllowList(("127.0.0.1/32",), resolve=Resolver(rebinding="localhost"), network=network)
    with http_server(images) as server, http_server(inside) as inside_url:
        failed = fetch(allow, f"{server}/redirect?to=http://localhost:{port_of(inside_url)}/secret")
    assert isinstance(failed, GatewayError) and failed.field == "input.image" and inside.seen == []
    assert network.connects == [("127.0.0.1", port_of(server)), (PUBLIC, port_of(inside_url))]


@pytest.mark.parametrize("to", ["http://127.0.0.1:{port}/secret", "http://localhost:{port}/secret",
                                "http://[::ffff:127.0.0.1]:{port}/secret"])
def test_a_redirect_to_loopback_is_refused_as_it_connects(to):
    """The first host is allowed by name; the hop it redirects to is checked on its own, where it connects."""
    images, inside, network = recording_handler(), recording_handler(), Network()
    allow = AllowList(("images.test",), resolve=Resolver({"images.test": "127.0.0.1", "localhost": "127.0.0.1"}),
                      network=network)
    with http_server(images) as server, http_server(inside) as inside_url:
        hop = to.format(port=port_of(inside_url))
        failed = fetch(allow, f"http://images.test:{port_of(server)}/redirect?to={hop}")
    assert isinstance(failed, GatewayError) and "is a private, loopback or reserved address" in failed.detail
    assert failed.field == "input.image" and inside.seen == []
    assert network.connects == [("127.0.0.1", port_of(server))]


def test_the_request_keeps_the_name_for_host_and_tls():
    """Only the TCP target is the checked address: the Host header, and TLS's server name, are the URL's."""
    handler, network = recording_handler(), Network()
    allow = AllowList(("127.0.0.1/32",), resolve=Resolver({"images.test": "127.0.0.1"}), network=network)
    with http_server(handler) as server:
        assert fetch(allow, f"http://images.test:{port_of(server)}/image.png") == PNG
    assert handler.seen == [("/image.png", f"images.test:{port_of(server)}")]
    with tls_listener() as (port, server_names):
        failed = fetch(allow, f"https://images.test:{port}/image.png")  # no certificate: the handshake fails
    assert isinstance(failed, GatewayError) and server_names == ["images.test"]
    assert network.connects == [("127.0.0.1", port_of(server)), ("127.0.0.1", port)]


@contextmanager
def tls_listener():
    """A TLS listener on 127.0.0.1 for one connection, recording the server name (SNI) the client sends."""
    names: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sni_callback = lambda connection, name, context: names.append(name)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def serve():
        with listener, listener.accept()[0] as connection:
            try:
                context.wrap_socket(connection, server_side=True)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], names
    thread.join(30)


def webhooks_with(allow: AllowList, **options) -> tuple[Webhooks, CollectorRegistry]:
    registry = CollectorRegistry()
    outcomes = Counter("deliveries", "webhook events by result", ["result"], registry=registry)
    settings = {"attempts": 1, "backoff": 0.05, "timeout": TIMEOUT, **options}
    # The bootstrap owner's configured secret: no store is asked for one.
    return Webhooks(None, configured=SIGNING_KEY, data_dir=Path("/nonexistent"), allow=allow, outcomes=outcomes,
                    **settings), registry


async def completed(webhooks: Webhooks, url: str) -> float:
    """Sends a `completed` event to `url` and waits for its delivery to end (at most the timeout + 10 s per
    attempt); the seconds it took."""
    started = time.monotonic()
    try:
        webhooks.send("job", BOOTSTRAP_OWNER, url, [], "completed", {"id": "job", "status": "succeeded"})
        await asyncio.wait_for(asyncio.gather(*webhooks.senders), (webhooks.timeout + 10) * webhooks.attempts)
    finally:
        await webhooks.close()
    return time.monotonic() - started


def outcome(registry: CollectorRegistry) -> str:
    [result] = [result for result in ("delivered", "failed")
                if registry.get_sample_value("deliveries_total", {"result": result})]
    return result


def replying(body_chunk: bytes, pause: float):
    """A receiver answering 200 at once, then `body_chunk` every `pause` seconds until the client goes away."""
    class Dripping(QuietHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)  # HTTP/1.0 and no length: the body lasts until the connection closes
            self.end_headers()
            try:
                while True:
                    self.wfile.write(body_chunk)
                    self.wfile.flush()
                    time.sleep(pause)
            except OSError:
                pass

    return Dripping


def test_a_slow_drip_reply_does_not_hold_a_delivery_past_the_timeout(caplog):
    caplog.set_level(logging.INFO, logger="svd_gateway")
    with http_server(replying(b"x", 1.0)) as server:
        webhooks, registry = webhooks_with(AllowList(("127.0.0.1/32",)))
        elapsed = asyncio.run(completed(webhooks, f"{server}/hook"))
    assert outcome(registry) == "failed" and elapsed < TIMEOUT + 10
    assert f"no complete reply within {TIMEOUT:g} s" in caplog.text


def test_an_endless_reply_is_cut_at_the_cap():
    """Delivered, so its end came from the cap (REPLY_CAP bytes read), not from the timeout."""
    with http_server(replying(b"x" * (REPLY_CAP // 4), 0.01)) as server:
        webhooks, registry = webhooks_with(AllowList(("127.0.0.1/32",)))
        asyncio.run(completed(webhooks, f"{server}/hook"))
    assert outcome(registry) == "delivered"


def test_logs_never_show_a_webhook_urls_query(caplog):
    """A failing receiver (retried, then given up) and a refused one: the token reaches the receiver, not the logs."""
    caplog.set_level(logging.DEBUG, logger="svd_gateway")
    failing = recording_handler(status=500)
    with http_server(failing) as server:
        for allow, url in ((AllowList(("127.0.0.1/32",)), f"{server}/hook?token=SECRET#SECRET"),
                           (AllowList(()), f"http://user:SECRET@127.0.0.1:{port_of(server)}/hook?token=SECRET")):
            webhooks, _ = webhooks_with(allow, attempts=2)
            asyncio.run(completed(webhooks, url))
    assert [path for path, _ in failing.seen] == ["/hook?token=SECRET"] * 2
    messages = [record.getMessage() for record in caplog.records if record.name.startswith("svd_gateway")]
    assert any("given up after 2 attempts" in message for message in messages)
    assert any("not sent" in message for message in messages)
    assert messages and not any("SECRET" in message for message in messages)


def test_an_image_url_answering_compressed_bytes_is_refused_before_they_expand():
    """2 MiB of zeros gzipped to about 2 KiB, over a 1 MiB limit: asked for `identity` and read raw, the reply is
    refused for its encoding, never decompressed (httpx would decode it, and a few bytes of brotli expand to
    gigabytes before a size check sees them)."""
    import gzip

    bomb = gzip.compress(bytes(2 << 20))
    asked = []

    class Compressing(QuietHandler):
        def do_GET(self):
            asked.append(self.headers.get("accept-encoding"))
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(bomb)))
            self.end_headers()
            self.wfile.write(bomb)

    with http_server(Compressing) as url:
        refused = fetch(AllowList(("127.0.0.1",)), f"{url}/image.png")
    assert isinstance(refused, GatewayError) and refused.status_code == 400, refused
    assert "Content-Encoding 'gzip'" in refused.detail and refused.field == "input.image"
    assert asked == ["identity"]
