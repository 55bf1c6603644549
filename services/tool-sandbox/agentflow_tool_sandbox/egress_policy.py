"""Which connections a tool's egress allow-list permits: exact host and port, nothing else.

Pure logic (no sockets): the proxy asks `decide` before it resolves or connects anything.

- Hosts match exactly after normalisation (lowercase, no trailing dot, no IPv6 brackets): listing
  `api.example.com` allows neither `example.com` nor `x.api.example.com`.
- An IP literal is refused unless that literal itself is listed, whatever name resolves to it; numeric
  forms the C resolver also accepts (`127.1`, `0x7f000001`, `2130706433`) are refused as unlisted literals.
- The port must be listed for that host.
- After an allowed name is resolved, each address is checked again (`address_allowed`): a loopback,
  link-local, private, shared, unspecified, multicast or reserved address is refused unless that exact IP
  literal is itself listed for the port, so a name resolving to 127.0.0.1 or 169.254.169.254 does not reach
  the service host's loopback or the cloud metadata endpoint.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_HOST = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")

ALLOWED = "allowed"
DENIED_INVALID_HOST = "invalid_host"
DENIED_IP_LITERAL = "ip_literal_not_allowed"
DENIED_HOST = "host_not_allowed"
DENIED_PORT = "port_not_allowed"
DENIED_ADDRESS = "address_not_allowed"


@dataclass(frozen=True, order=True)
class HostPort:
    """One allow-list entry (or one requested destination)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Decision:
    """The answer for one destination: `reason` is `allowed` or why it was refused."""

    destination: HostPort
    reason: str

    @property
    def allowed(self) -> bool:
        return self.reason == ALLOWED


def normalize_host(host: str) -> str | None:
    """The canonical form of `host` (a DNS name or an IP literal), None when it is neither."""
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.removesuffix(".")
    if not text or len(text) > MAX_HOST:
        return None
    literal = ip_literal(text)
    if literal is not None:
        return literal
    if _NUMERIC.match(text):
        return text  # a numeric form inet_aton accepts: an unlisted literal, never resolved
    if all(_LABEL.match(label) for label in text.split(".")):
        return text
    return None


def ip_literal(host: str) -> str | None:
    """The canonical text of an IPv4/IPv6 literal, None for anything else."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def is_literal(host: str) -> bool:
    """True for IP literals and the numeric forms the resolver would treat as addresses."""
    return ip_literal(host) is not None or bool(_NUMERIC.match(host))


def allow_list(entries: Iterable[tuple[str, int]]) -> frozenset[HostPort]:
    """Normalise a profile's (host, port) pairs; raises ValueError naming the first invalid one."""
    result = set()
    for host, port in entries:
        normal = normalize_host(host)
        if normal is None:
            raise ValueError(f"egress host {host!r} is not a DNS name or an IP address")
        if not 0 < port < 65536:
            raise ValueError(f"egress port {port} for {host!r} is not between 1 and 65535")
        result.add(HostPort(normal, port))
    return frozenset(result)


def decide(allowed: frozenset[HostPort], host: str, port: int) -> Decision:
    """Whether a connection to `host:port` is permitted by `allowed` (already normalised)."""
    normal = normalize_host(host)
    if normal is None or not 0 < port < 65536:
        return Decision(HostPort(host[:MAX_HOST], port), DENIED_INVALID_HOST)
    destination = HostPort(normal, port)
    if destination in allowed:
        return Decision(destination, ALLOWED)
    if any(entry.host == normal for entry in allowed):
        return Decision(destination, DENIED_PORT)
    return Decision(destination, DENIED_IP_LITERAL if is_literal(normal) else DENIED_HOST)


def address_allowed(allowed: frozenset[HostPort], address: str, port: int) -> bool:
    """Whether a resolved `address` may be connected to: a public (globally routable, unicast) address, or
    any address whose literal is listed for `port`."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # no IPv6 zone id
    except ValueError:
        return False
    if HostPort(str(ip), port) in allowed:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if HostPort(str(ip), port) in allowed:
            return True
    internal = (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )
    return ip.is_global and not internal
