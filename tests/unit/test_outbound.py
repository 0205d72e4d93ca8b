"""The outbound guard's rules: which addresses are refused, and how the allow-list lets some through."""

from __future__ import annotations

import ipaddress

import pytest

from infra.net.outbound import AllowList, OutboundBlocked, OutboundGuard, is_forbidden, parse_allow_entry, url_host

BLOCKED = [
    "127.0.0.1",
    "127.1.2.3",
    "0.0.0.0",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fd00::1",
    "fc00::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::127.0.0.1",
    "2002:7f00:1::",
    "2002:a9fe:a9fe::",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "2001:db8::1",
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::"]


@pytest.mark.parametrize("address", BLOCKED)
def test_non_public_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_pass(address: str) -> None:
    assert not is_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00::1]/",
        "http://localhost:1/",
        "http://2130706433/",  # 127.0.0.1 as one integer, resolved by getaddrinfo
        "ftp://example.com/",
        "http://user:pw@example.com/",
    ],
)
async def test_the_guard_refuses_without_an_allow_list(url: str) -> None:
    with pytest.raises(OutboundBlocked):
        await OutboundGuard().check_url(url)


async def test_the_allow_list_lets_hosts_and_networks_through() -> None:
    guard = OutboundGuard(["127.0.0.1/32", "LocalHost", "fd00::/8"])
    await guard.check_url("http://127.0.0.1:8000/v1")
    await guard.check_url("http://localhost:9/")
    await guard.check_url("http://[fd00::5]/")
    await guard.check_url("http://[::ffff:127.0.0.1]/")  # the mapped form of an allowed IPv4 address
    with pytest.raises(OutboundBlocked):
        await guard.check_url("http://127.0.0.2/")
    with pytest.raises(OutboundBlocked):
        await guard.check_url("http://[::1]/")
    # a tenant's entries add to the instance's
    await guard.with_allow(["10.0.0.0/8"]).check_url("http://10.9.9.9/")
    with pytest.raises(OutboundBlocked):
        await guard.check_url("http://10.9.9.9/")


@pytest.mark.parametrize("entry", ["", "a b", "http://x", "x/y", "1.2.3.4/99", "-" * 300])
def test_bad_allow_entries_are_rejected(entry: str) -> None:
    with pytest.raises(ValueError, match=r"host name|CIDR"):
        parse_allow_entry(entry)


def test_allow_entries_parse() -> None:
    allow = AllowList(["Example.COM.", "10.0.0.0/8", "::1"])
    assert allow.allows_host("example.com")
    assert allow.allows_ip(ipaddress.ip_address("10.1.1.1"))
    assert allow.allows_ip(ipaddress.ip_address("::1"))
    assert not allow.allows_ip(ipaddress.ip_address("11.0.0.1"))


def test_url_host_is_normalised() -> None:
    assert url_host("https://API.example.com./v1") == "api.example.com"
    assert url_host("http://127.0.0.1:8000/v1") == "127.0.0.1:8000"
