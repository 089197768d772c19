"""Connections the gateway makes on a client's behalf (webhook deliveries, image URLs), only to hosts the allow-list
permits: http(s) URLs whose host resolves to public addresses only, or a host or network the operator allowed
(`--webhook-allow`). Private, loopback, link-local, reserved and translated addresses are refused otherwise, so
a client cannot make the gateway reach into the network it runs in.

The check is made where each TCP connection is opened (`AllowList.transport`): the host is resolved once, every
address it resolved to is checked, and the connection goes to a checked address itself, so a DNS answer that
changes between a check and the connect (DNS rebinding) reaches nothing new. Redirects are checked the same way,
being new connections. `AllowList.refusal` is an earlier check of a URL, for a clear answer to the client.

An image URL is fetched with a time limit for the whole fetch and a size limit, following redirects (each hop
checked as it connects) at most MAX_REDIRECTS times.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import cast

import httpcore
import httpx

from .compat import transport_over
from .errors import GatewayError

MAX_REDIRECTS = 5

NOT_PUBLIC = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",  # "this network", 0.0.0.0 included
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",  # private (RFC 1918)
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local: cloud metadata services
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address 255.255.255.255
        "::/96",  # the unspecified ::, loopback ::1, and IPv4-compatible addresses (deprecated)
        "::ffff:0:0/96",  # IPv4-mapped: refused whatever IPv4 address it carries
        "64:ff9b::/96",
        "64:ff9b:1::/48",  # NAT64: a translator reaches the IPv4 address inside
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, Teredo (2001::/32) among them
        "2001:db8::/32",
        "3fff::/20",  # documentation
        "2002::/16",  # 6to4: a relay reaches the IPv4 address inside
        "fc00::/7",  # unique local (private)
        "fe80::/10",
        "fec0::/10",  # link-local, site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
"""Refused unless the operator allowed them, though Python's `is_global` is true for some (NAT64, 6to4,
IPv4-mapped, multicast, site-local)."""

Resolve = Callable[[str, int], Awaitable[list[str]]]
"""Resolves a host name and port to IP address strings."""


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `address` is a public unicast address, one that cannot lead into the gateway's own network."""
    return address.is_global and not any(address in network for network in NOT_PUBLIC)


def is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
        return True
    except ValueError:
        return False


async def system_resolve(host: str, port: int) -> list[str]:
    answers = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # The address's host: typeshed also allows the (int, bytes) an AF_INET6 answer is in a Python built without IPv6
    return [cast(str, info[4][0]) for info in answers]


class Refused(httpx.ConnectError):
    """A connection the allow-list refused; the message says why. An httpx.ConnectError, so code that handles
    failed connections handles it too."""


def target(url: str) -> tuple[str, int]:
    """The host and port an http(s) URL connects to, as httpx will see them; Refused for any other URL."""
    try:
        parts = httpx.URL(url)
    except httpx.InvalidURL:
        raise Refused("not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.raw_host:
        raise Refused("must be an http(s) URL")
    return parts.raw_host.decode("ascii"), parts.port or (443 if parts.scheme == "https" else 80)


class AllowList:
    """Which hosts the gateway may connect to for a client. `resolve` answers DNS (the system's by default);
    `network` opens the TCP connections to checked addresses (httpcore's anyio backend by default)."""

    def __init__(
        self,
        allow: tuple[str, ...],
        *,
        resolve: Resolve = system_resolve,
        network: httpcore.AsyncNetworkBackend | None = None,
    ):
        self.hosts = {entry.lower() for entry in allow if not is_network(entry)}
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in allow if is_network(entry)]
        self.resolve = resolve
        self.network = network or httpcore.AnyIOBackend()

    async def refusal(self, url: str) -> str | None:
        """Why the gateway must not connect to `url`, or None when it may (as DNS answers now: every connection
        is checked again as it is opened)."""
        try:
            await self.addresses(*target(url))
        except Refused as refused:
            return str(refused)
        return None

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses `host` resolves to, resolved once, if the gateway may connect to them: an allowed host
        name, or every address public or in an allowed network. Refused otherwise."""
        host = host.lower()
        try:
            answers = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                answers = list(dict.fromkeys(await self.resolve(host, port)))
            except (OSError, UnicodeError):
                answers = []
        if not answers:
            raise Refused(f"cannot resolve {host[:100]}")
        if host in self.hosts or all(self.permits(ipaddress.ip_address(answer)) for answer in answers):
            return answers
        raise Refused(f"{host[:100]} is a private, loopback or reserved address not in the gateway's allow-list")

    def permits(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return is_public(address) or any(address in network for network in self.networks)

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport whose every connection is checked as it is opened (`CheckedNetwork`)."""
        return transport_over(CheckedNetwork(self))


class CheckedNetwork(httpcore.AsyncNetworkBackend):
    """Opens a TCP connection only to an address the allow-list checked, and to that address itself, never to
    the name again. TLS (SNI, certificate) and the Host header still use the name: httpcore takes them from the
    request, not from the address connected to."""

    def __init__(self, allow: AllowList):
        self.allow = allow

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure = None
        for address in await self.allow.addresses(host, port):  # in the resolver's order, as a name would be
            try:
                return await self.allow.network.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None, "addresses() answers at least one address or refuses"
        raise failure


class ImageFetcher:
    """GETs image URLs within the allow-list, `max_bytes` and `seconds`; every failure is a 4xx naming the field."""

    def __init__(self, allow: AllowList, *, max_bytes: int, seconds: float):
        self.max_bytes, self.seconds = max_bytes, seconds
        self.http = httpx.AsyncClient(
            transport=allow.transport(), follow_redirects=False, timeout=seconds, trust_env=False
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def fetch(self, url: str, field: str, status: int = 400) -> bytes:
        def refused(reason: str) -> GatewayError:
            return GatewayError(status, "invalid_request", f"{field}: {url[:200]} was not fetched: {reason}", field)

        try:
            return await asyncio.wait_for(self._fetch(url, refused), self.seconds)
        except TimeoutError:
            raise refused(f"no complete answer within {self.seconds:g} s") from None
        except Refused as error:
            raise refused(str(error)) from None
        except httpx.HTTPError as error:
            raise refused(type(error).__name__) from None

    async def _fetch(self, url: str, refused) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            target(url)  # an http(s) URL; its host is checked as the connection opens
            # identity only, read raw: a few compressed bytes must not expand past max_bytes before they are counted
            async with self.http.stream("GET", url, headers={"accept-encoding": "identity"}) as reply:
                if reply.is_redirect and "location" in reply.headers:
                    url = str(reply.url.join(reply.headers["location"]))
                    continue
                if not reply.is_success:
                    raise refused(f"it answered HTTP {reply.status_code}")
                encoding = reply.headers.get("content-encoding", "identity").strip().lower()
                if encoding != "identity":
                    raise refused(f"it answered Content-Encoding {encoding[:40]!r}; send the image uncompressed")
                data = bytearray()
                async for chunk in reply.aiter_raw():
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise refused(f"it is over {self.max_bytes} bytes")
                return bytes(data)
        raise refused(f"more than {MAX_REDIRECTS} redirects")
