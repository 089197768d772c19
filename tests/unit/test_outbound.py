"""The outbound allow-list's rules, without a network: which addresses count as public (Python's `is_global` alone
lets NAT64, 6to4, IPv4-mapped and multicast addresses through), how a host's resolved addresses are judged (every
one must pass, resolved once), and how webhook URLs appear in logs."""
from __future__ import annotations

import asyncio
import ipaddress

import pytest

from svd_gateway.outbound import AllowList, Refused, is_public
from svd_gateway.webhooks import without_secrets

REFUSED = [
    "127.0.0.1", "127.255.255.254", "::1",  # loopback
    "10.1.2.3", "172.16.0.1", "192.168.0.10", "fc00::1", "fd12:3456::1",  # private
    "169.254.169.254", "fe80::1", "fe80::1%1",  # link-local: metadata services
    "100.64.0.1", "100.127.255.254",  # carrier-grade NAT
    "0.0.0.0", "0.1.2.3", "::",  # unspecified, "this network"
    "64:ff9b::808:808", "64:ff9b::7f00:1", "64:ff9b:1::1",  # NAT64 (is_global: True)
    "::ffff:8.8.8.8", "::ffff:127.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped, refused whatever inside
    "::808:808",  # IPv4-compatible (is_global: True)
    "2002:7f00:1::1", "2002:808:808::1",  # 6to4 (is_global: True)
    "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "224.0.0.1", "224.0.1.1", "239.1.1.1", "233.252.0.1", "ff02::1", "ff0e::1",  # multicast (some is_global: True)
    "240.0.0.1", "255.255.255.255",  # reserved, broadcast
    "192.0.0.1", "192.0.2.1", "198.51.100.1", "203.0.113.1", "2001:db8::1", "3fff::1",  # assignments, documentation
    "192.88.99.1", "198.18.0.1", "100::1", "fec0::1",  # 6to4 relay, benchmarking, discard, site-local
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "100.128.0.1", "2606:4700:4700::1111", "2a00:1450:4001:82a::200e"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address):
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_permitted(address):
    assert is_public(ipaddress.ip_address(address))


def test_python_alone_would_let_some_through():
    """Why the explicit list exists: each of these is `is_global` in Python, yet reaches somewhere it must not."""
    assert all(ipaddress.ip_address(address).is_global
               for address in ("64:ff9b::7f00:1", "::ffff:8.8.8.8", "2002:7f00:1::1", "224.0.1.1", "ff0e::1"))


def answering(answers: dict[str, list[str]], calls: list[str] | None = None):
    """A resolver from a table; records each name it is asked (an unknown name fails like a DNS miss)."""
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in answers:
            raise OSError("unknown host")
        return answers[host]
    return resolve


def addresses(allow: AllowList, host: str) -> list[str] | str:
    """The addresses `allow` would connect to, or the reason it refuses."""
    try:
        return asyncio.run(allow.addresses(host, 80))
    except Refused as refused:
        return str(refused)


def test_every_resolved_address_must_be_public():
    public = ["93.184.216.34", "2606:4700:4700::1111", "93.184.216.34"]
    allow = AllowList((), resolve=answering({"mixed.test": ["93.184.216.34", "10.0.0.5"], "public.test": public}))
    assert addresses(allow, "mixed.test") == ("mixed.test is a private, loopback or reserved address not in the "
                                              "gateway's allow-list")
    assert addresses(allow, "public.test") == ["93.184.216.34", "2606:4700:4700::1111"]
    assert addresses(allow, "missing.test") == "cannot resolve missing.test"


def test_the_operators_hosts_and_networks_are_permitted():
    allow = AllowList(("Hooks.Internal", "10.0.0.0/8", "fd00::/8"),
                      resolve=answering({"hooks.internal": ["192.168.1.9"], "ten.test": ["10.2.3.4", "fd00::2"],
                                         "other.test": ["10.2.3.4", "192.168.1.9"]}))
    assert addresses(allow, "HOOKS.internal") == ["192.168.1.9"]  # an allowed name: whatever it resolves to
    assert addresses(allow, "ten.test") == ["10.2.3.4", "fd00::2"]
    assert "allow-list" in addresses(allow, "other.test")  # one address outside the allowed networks is enough
    assert addresses(allow, "10.9.9.9") == ["10.9.9.9"]


def test_an_address_literal_is_judged_without_the_resolver():
    calls: list[str] = []
    allow = AllowList((), resolve=answering({}, calls))
    assert "allow-list" in addresses(allow, "127.0.0.1") and "allow-list" in addresses(allow, "::ffff:7f00:1")
    assert addresses(allow, "8.8.8.8") == ["8.8.8.8"] and calls == []


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.com/x", "must be an http(s) URL"),
    ("/relative", "must be an http(s) URL"),
    ("http://[::1/x", "not a valid URL"),
    ("http://[::1]:9/hook", "::1 is a private, loopback or reserved address not in the gateway's allow-list"),
    ("http://rebind.test/hook", "rebind.test is a private, loopback or reserved address"),
    ("https://public.test/hook?token=x", None),
])
def test_the_early_check_of_a_url(url, reason):
    allow = AllowList((), resolve=answering({"rebind.test": ["127.0.0.1"], "public.test": ["93.184.216.34"]}))
    refusal = asyncio.run(allow.refusal(url))
    assert refusal == reason or (reason and refusal.startswith(reason))


@pytest.mark.parametrize(("url", "shown"), [
    ("http://127.0.0.1:8080/hook?token=SECRET", "http://127.0.0.1:8080/hook"),
    ("https://user:SECRET@hooks.example.com/a/b#SECRET", "https://hooks.example.com/a/b"),
    ("http://[::1]:9/x?a=1&b=SECRET", "http://[::1]:9/x"),
])
def test_logs_show_a_webhook_url_without_query_fragment_or_userinfo(url, shown):
    assert without_secrets(url) == shown
