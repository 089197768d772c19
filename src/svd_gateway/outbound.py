"""Connections the gateway makes on a client's behalf (webhook deliveries, image URLs), only to hosts the allow-list
permits: http(s) URLs whose host resolves to public addresses only, or a host or network the operator allowed
(`--webhook-allow`). Private, loopback, link-local and reserved addresses are refused otherwise, so a client
cannot make the gateway reach into the network it runs in.

An image URL is fetched with a time limit for the whole fetch and a size limit, following redirects only to
hosts the allow-list permits (each hop is checked), at most MAX_REDIRECTS of them.
"""
from __future__ import annotations

import asyncio
import ipaddress
from urllib.parse import urlsplit

import httpx

from .errors import GatewayError

MAX_REDIRECTS = 5


def is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
        return True
    except ValueError:
        return False


class AllowList:
    def __init__(self, allow: tuple[str, ...]):
        self.hosts = {entry.lower() for entry in allow if not is_network(entry)}
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in allow if is_network(entry)]

    async def refusal(self, url: str) -> str | None:
        """Why the gateway must not connect to `url`, or None when it may."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return "not a valid URL"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "must be an http(s) URL"
        host = parts.hostname.lower()
        if host in self.hosts:
            return None
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port)
        except (OSError, UnicodeError):
            return f"cannot resolve {host[:100]}"
        addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}
        if all(address.is_global or any(address in net for net in self.networks) for address in addresses):
            return None
        return f"{host[:100]} is a private, loopback or reserved address not in the gateway's allow-list"


class ImageFetcher:
    """GETs image URLs within the allow-list, `max_bytes` and `seconds`; every failure is a 4xx naming the field."""

    def __init__(self, allow: AllowList, *, max_bytes: int, seconds: float):
        self.allow, self.max_bytes, self.seconds = allow, max_bytes, seconds
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=seconds)

    async def close(self) -> None:
        await self.http.aclose()

    async def fetch(self, url: str, field: str, status: int = 400) -> bytes:
        def refused(reason: str) -> GatewayError:
            return GatewayError(status, "invalid_request", f"{field}: {url[:200]} was not fetched: {reason}", field)

        try:
            return await asyncio.wait_for(self._fetch(url, refused), self.seconds)
        except asyncio.TimeoutError:
            raise refused(f"no complete answer within {self.seconds:g} s") from None
        except httpx.HTTPError as error:
            raise refused(type(error).__name__) from None

    async def _fetch(self, url: str, refused) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            reason = await self.allow.refusal(url)
            if reason:
                raise refused(reason)
            async with self.http.stream("GET", url) as reply:
                if reply.is_redirect and "location" in reply.headers:
                    url = str(reply.url.join(reply.headers["location"]))
                    continue
                if not reply.is_success:
                    raise refused(f"it answered HTTP {reply.status_code}")
                data = bytearray()
                async for chunk in reply.aiter_bytes():
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise refused(f"it is over {self.max_bytes} bytes")
                return bytes(data)
        raise refused(f"more than {MAX_REDIRECTS} redirects")
