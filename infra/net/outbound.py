"""The outbound guard: every server-side request to a user-chosen URL (provider base URLs, later MCP
servers, URL ingestion, webhooks) goes through it, so the server cannot be pointed at itself, the
private network or a cloud metadata endpoint.

A destination is refused when any address its host resolves to is loopback, private, link-local,
unique-local, multicast, unspecified, reserved, CGNAT or otherwise not globally routable, including
IPv4 addresses hidden in IPv6 forms (IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo). The
allow-list (LITESKILL_OUTBOUND_ALLOW plus a tenant admin's ``outbound_allow``) names hosts or CIDRs
that are let through anyway. ``guarded_client`` / ``guarded_client2`` check every request in the
transport, so each redirect hop is checked too, and refuse to send a request carrying stored
credentials to any host but the one they were saved for; a refusal there is a ``ConnectError``
whose cause is the ``OutboundBlocked`` (``blocked_cause`` finds it).

Residual risk, on purpose: the name is resolved again by the connection (a DNS answer that changes
between the check and the connect is not pinned).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx
import httpx2

from domain.shared.errors import Invalid

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class OutboundBlocked(Invalid):
    """The destination is not allowed for server-side requests."""

    code = "outbound_blocked"


class CredentialsHostMismatch(OutboundBlocked):
    """Stored credentials are only ever sent to the host they were saved for."""

    code = "credentials_host_mismatch"


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, in any of the forms that route to it."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    packed = ip.packed
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(packed[-4:])
    if packed[:12] == bytes(12) and int(ip) > 1:  # IPv4-compatible ::a.b.c.d (deprecated, still parsed)
        return ipaddress.IPv4Address(packed[-4:])
    return None


def is_forbidden(ip: IPAddress) -> bool:
    """Whether ``ip`` is not a public unicast address (or hides one that is not)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return True
        inner = _embedded_v4(ip)
        if inner is not None:
            return is_forbidden(inner)
    if ip in _CGNAT:
        return True
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or not ip.is_global
    )


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


class AllowList:
    """Hosts (exact names, case-insensitive) and networks let through despite the rules."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.hosts: set[str] = set()
        self.networks: list[IPNetwork] = []
        for entry in entries:
            kind, value = parse_allow_entry(entry)
            if kind == "network":
                assert isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network)
                self.networks.append(value)
            else:
                self.hosts.add(str(value))

    def allows_host(self, host: str) -> bool:
        return _normal_host(host) in self.hosts

    def allows_ip(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c in net for c in candidates for net in self.networks if c.version == net.version)


def parse_allow_entry(entry: str) -> tuple[str, IPNetwork | str]:
    """``("network", net)`` for an address or CIDR, ``("host", name)`` for a host name; ValueError otherwise."""
    value = entry.strip()
    if not value or len(value) > 253:
        raise ValueError("an allow-list entry is a host name, an IP address or a CIDR")
    try:
        return "network", ipaddress.ip_network(value.strip("[]"), strict=False)
    except ValueError:
        pass
    host = _normal_host(value)
    labels = host.split(".")
    if (
        "/" in host
        or ":" in host
        or not all(label and len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label) for label in labels)
    ):
        raise ValueError(f"{entry!r} is neither a host name nor an IP address or CIDR")
    return "host", host


class OutboundGuard:
    """Checks destinations against the rules and the allow-list."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow = AllowList(allow)

    def with_allow(self, extra: Iterable[str]) -> OutboundGuard:
        extra = list(extra)
        if not extra:
            return self
        guard = OutboundGuard()
        guard.allow.hosts = self.allow.hosts | AllowList(extra).hosts
        guard.allow.networks = self.allow.networks + AllowList(extra).networks
        return guard

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(_normal_host(host))]
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise OutboundBlocked(f"The host {host!r} could not be resolved.", code="outbound_unresolvable") from exc
        out: list[IPAddress] = []
        for info in infos:
            address = str(info[4][0]).split("%", 1)[0]
            out.append(ipaddress.ip_address(address))
        return out

    async def check(self, scheme: str, host: str, port: int | None) -> None:
        """Raise ``OutboundBlocked`` unless a request to ``scheme://host:port`` is allowed."""
        if scheme not in ("http", "https"):
            raise OutboundBlocked(f"Only http and https destinations are allowed (got {scheme!r}).")
        if not host:
            raise OutboundBlocked("The destination has no host.")
        if self.allow.allows_host(host):
            return
        addresses = await self.resolve(host, port or (443 if scheme == "https" else 80))
        if not addresses:
            raise OutboundBlocked(f"The host {host!r} did not resolve to any address.")
        for ip in addresses:
            if is_forbidden(ip) and not self.allow.allows_ip(ip):
                raise OutboundBlocked(
                    f"Requests to {host} are not allowed: it resolves to a private, loopback, link-local"
                    " or otherwise non-public address. An administrator may allow it (outbound_allow)."
                )

    async def check_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise OutboundBlocked(f"The URL is not valid ({exc}).") from exc
        if parts.username is not None or parts.password is not None:
            raise OutboundBlocked("URLs must not carry credentials (user:password@).")
        await self.check(parts.scheme.lower(), parts.hostname or "", port)


def url_host(url: str) -> str:
    """``host[:port]`` of ``url``, normalised: what credentials are bound to."""
    parts = urlsplit(url)
    host = _normal_host(parts.hostname or "")
    return f"{host}:{parts.port}" if parts.port else host


def _request_host(url: Any) -> str:
    host = _normal_host(str(url.host))
    return f"{host}:{url.port}" if url.port else host


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport checking each request (redirect hops included) before sending it."""

    def __init__(self, guard: OutboundGuard, credential_host: str | None = None, **kwargs: Any) -> None:
        self.guard = guard
        self.credential_host = credential_host
        self.inner = httpx.AsyncHTTPTransport(**kwargs)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            _check_credential_host(self.credential_host, request.url)
            await self.guard.check(request.url.scheme, str(request.url.host), request.url.port)
        except OutboundBlocked as exc:
            # A transport error, so SDKs and adapters handle it like any failed connection;
            # ``blocked_cause`` finds the reason behind it.
            raise httpx.ConnectError(exc.detail, request=request) from exc
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class GuardedTransport2(httpx2.AsyncBaseTransport):
    """The same for ``httpx2``, which the OpenAI and Anthropic SDKs use instead of httpx."""

    def __init__(self, guard: OutboundGuard, credential_host: str | None = None, **kwargs: Any) -> None:
        self.guard = guard
        self.credential_host = credential_host
        self.inner = httpx2.AsyncHTTPTransport(**kwargs)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            _check_credential_host(self.credential_host, request.url)
            await self.guard.check(request.url.scheme, str(request.url.host), request.url.port)
        except OutboundBlocked as exc:
            # A transport error, so SDKs and adapters handle it like any failed connection;
            # ``blocked_cause`` finds the reason behind it.
            raise httpx2.ConnectError(exc.detail, request=request) from exc
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _check_credential_host(credential_host: str | None, url: Any) -> None:
    # A client built with credentials talks to their host only: a redirect elsewhere is refused
    # rather than risk a header (x-api-key, a custom one) the redirect logic does not strip.
    if credential_host is not None and _request_host(url) != credential_host:
        raise CredentialsHostMismatch(
            f"The stored credentials belong to {credential_host}; refusing to send them to {_request_host(url)}."
        )


def guarded_client(
    guard: OutboundGuard, *, credential_host: str | None = None, timeout_s: float = 600, follow_redirects: bool = True
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` (HTTP rerankers, fetches) behind the guard."""
    return httpx.AsyncClient(
        transport=GuardedTransport(guard, credential_host),
        timeout=httpx.Timeout(timeout_s, connect=10),
        follow_redirects=follow_redirects,
        trust_env=False,
    )


SDK_CONNECTION_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
"""The OpenAI and Anthropic SDKs' own pool limits (httpx2's default of 100 connections would cap a
process at 100 concurrent streams to one provider)."""


def guarded_client2(
    guard: OutboundGuard, *, credential_host: str | None = None, timeout_s: float = 600, follow_redirects: bool = True
) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` (the OpenAI and Anthropic SDKs vendor httpx2) behind the guard."""
    return httpx2.AsyncClient(
        transport=GuardedTransport2(guard, credential_host, limits=SDK_CONNECTION_LIMITS),
        timeout=httpx2.Timeout(timeout_s, connect=10),
        follow_redirects=follow_redirects,
        trust_env=False,
    )


def blocked_cause(exc: BaseException, depth: int = 0) -> OutboundBlocked | None:
    """The ``OutboundBlocked`` behind an SDK's connection error, if that is what it was: along the
    cause/context chain and inside exception groups (anyio's, as the MCP SDK raises them)."""
    if isinstance(exc, OutboundBlocked):
        return exc
    if depth > 8:
        return None
    for inner in (exc.__cause__ or exc.__context__, *(getattr(exc, "exceptions", None) or ())):
        if isinstance(inner, BaseException) and inner is not exc:
            found = blocked_cause(inner, depth + 1)
            if found is not None:
                return found
    return None
