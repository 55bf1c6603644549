"""Where an API-registered HTTP MCP server may be: a public address, unless the operator allows the host.

The tool-sandbox connects to HTTP MCP servers itself (not through the tools' egress proxy), from inside the
operator's network. A tenant's registration must not make it reach this host, the local network or a cloud
metadata endpoint (169.254.169.254): every address a server's host resolves to is checked, and refused when
it is unspecified, loopback, link-local, private, multicast, reserved or otherwise not global, unless the
host (or host:port) is listed in `AF_MCP_API_ALLOWED_HOSTS`. Catalog servers (the operator's) are not
restricted.

Checked at registration and before each connection, and enforced where the connection is made
(`guarded_transport`: the socket goes to an address that was checked, so a name that resolves elsewhere
the second time is no way round; TLS still verifies the URL's host name).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from agentflow_tool_sandbox.egress_policy import address_allowed, normalize_host

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT = 10.0
DEFAULT_PORTS = {"http": 80, "https": 443}


class DestinationRefused(Exception):
    """A connection to a host the policy does not let API-registered servers reach (nothing was sent)."""


@dataclass(frozen=True)
class AllowedHosts:
    """The operator's exceptions: `(host, None)` allows any port of `host`, `(host, port)` that port."""

    entries: frozenset[tuple[str, int | None]] = frozenset()

    @classmethod
    def parse(cls, values: Iterable[str]) -> AllowedHosts:
        """From `host` / `host:port` / `[v6]:port` strings; ValueError names a malformed one."""
        entries: set[tuple[str, int | None]] = set()
        for value in values:
            try:
                url = httpx.URL(f"http://{value.strip()}")
            except httpx.InvalidURL as exc:
                raise ValueError(f"mcp_api_allowed_hosts: {value!r} is not a host or host:port") from exc
            host = normalize_host(url.host)
            if host is None or url.path not in ("", "/") or url.query or url.userinfo:
                raise ValueError(f"mcp_api_allowed_hosts: {value!r} is not a host or host:port")
            entries.add((host, url.port))
        return cls(frozenset(entries))

    def allows(self, host: str, port: int) -> bool:
        """Whether `host:port` was listed (the host alone, or with this port)."""
        name = normalize_host(host)
        return name is not None and ((name, None) in self.entries or (name, port) in self.entries)


def url_destination(url: str) -> tuple[str, int]:
    """The (host, port) an http(s) URL connects to; ValueError when it has no host."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a valid URL: {exc}") from exc
    if not parsed.host:
        raise ValueError("the URL names no host")
    return parsed.host, parsed.port or DEFAULT_PORTS.get(parsed.scheme, 80)


def address_problem(address: IPAddress) -> str | None:
    """Why `address` is not one an API-registered server may be on; None for a public address (the rule the
    tools' egress proxy applies to resolved addresses: `egress_policy.address_allowed`)."""
    if address_allowed(frozenset(), str(address), 0):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
    )
    kind = next((kind for hit, kind in checks if hit), None)
    return f"{address} is a {kind} address" if kind else f"{address} is not a public address"


def literal(host: str) -> IPAddress | None:
    """`host` as an IP address when it is a literal one."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def resolve(host: str, port: int, timeout: float = RESOLVE_TIMEOUT) -> list[IPAddress]:
    """Every address `host` resolves to (a literal resolves to itself); OSError (or ValueError, for a name
    that cannot be encoded) when it does not resolve."""
    found = literal(host)
    if found is not None:
        return [found]
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), timeout
    )
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def refused(host: str, port: int, addresses: Iterable[IPAddress]) -> str | None:
    """Why `host` (resolved to `addresses`) may not be reached; None when every address is public."""
    problems = [p for p in (address_problem(a) for a in addresses) if p is not None]
    if not problems:
        return None
    return f"{host}:{port} is not reachable for API-registered servers: {'; '.join(problems)}"


async def destination_problem(host: str, port: int, allowed: AllowedHosts) -> str | None:
    """Why a connection to `host:port` is refused (after resolving it); None when allowed. A host that does
    not resolve is not refused here (the connection will fail)."""
    if allowed.allows(host, port):
        return None
    try:
        addresses = await resolve(host, port)
    except (OSError, TimeoutError, ValueError):
        return None
    return refused(host, port, addresses)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend that resolves the host itself, checks every address, and connects the
    socket to a checked address (TLS is then started for the URL's host name, so certificates are verified
    as usual)."""

    def __init__(self, allowed: AllowedHosts) -> None:
        self.allowed = allowed
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self.allowed.allows(host, port):
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        try:
            addresses = await resolve(host, port, timeout or RESOLVE_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        problem = refused(host, port, addresses)
        if problem is not None:
            raise DestinationRefused(problem)
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("API-registered servers cannot be reached over a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a `GuardedBackend`; proxies from the environment are not used (a proxy would
    make the connection on the tenant's behalf, out of the check's sight)."""

    def __init__(self, allowed: AllowedHosts) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=GuardedBackend(allowed),
        )
