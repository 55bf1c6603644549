"""The one request a client sends the egress proxy: `CONNECT host:port`, or a plain-HTTP absolute-form
request (`GET http://host:port/path HTTP/1.1`), parsed from its head, with how its body is framed
(`Content-Length` or chunked; ambiguous framing is refused). Pure logic, no sockets."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 16 * 1024
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    }
)


class BadRequest(ValueError):
    """The head is not a request this proxy serves; the message says why (sent back with a 400)."""


@dataclass(frozen=True)
class ProxyRequest:
    """A parsed request: where it wants to go and, for plain HTTP, the head to send upstream."""

    method: str
    host: str
    port: int
    upstream_head: bytes = b""
    """Empty for CONNECT (a tunnel); else the request rewritten to origin form with `Connection: close`."""
    body_length: int = 0
    """Plain HTTP: the bytes of body after the head (`Content-Length`); only these are forwarded."""
    chunked: bool = False
    """Plain HTTP: the body is chunked (forwarded chunk by chunk up to its last chunk, nothing after)."""

    @property
    def tunnel(self) -> bool:
        return self.method == "CONNECT"


def parse_head(head: bytes) -> ProxyRequest:
    """Parse a request head ending in a blank line; raises BadRequest."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes any byte
        raise BadRequest("the request head is not text") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[2].startswith("HTTP/1."):
        raise BadRequest("the request line is not `METHOD target HTTP/1.x`")
    method, target, version = parts
    headers = _headers(lines[1:])
    if method == "CONNECT":
        host, port = split_authority(target, default_port=None)
        return ProxyRequest(method, host, port)
    url = urlsplit(target)
    if url.scheme != "http" or not url.netloc:
        raise BadRequest(
            "only CONNECT and absolute-form http:// requests go through the egress proxy "
            "(https:// URLs are tunnelled with CONNECT)"
        )
    if "@" in url.netloc:
        raise BadRequest("credentials in the URL are not forwarded")
    host, port = split_authority(url.netloc, default_port=80)
    path = url.path or "/"
    if url.query:
        path = f"{path}?{url.query}"
    # The Host header always names the checked destination: no reaching another virtual host of the
    # allowed address (domain fronting) by sending a different one.
    kept = [("Host", url.netloc)]
    kept += [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP | {"host"}]
    out = [f"{method} {path} {version}", *(f"{name}: {value}" for name, value in kept), "Connection: close"]
    length, chunked = body_framing(headers)
    head_out = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
    return ProxyRequest(method, host, port, head_out, body_length=length, chunked=chunked)


def body_framing(headers: list[tuple[str, str]]) -> tuple[int, bool]:
    """(Content-Length, chunked) of a request body; raises BadRequest on framing two parsers could read
    differently (both headers, a coding other than a final `chunked`, conflicting or invalid lengths)."""
    codings = [
        coding.strip().lower()
        for name, value in headers
        if name.lower() == "transfer-encoding"
        for coding in value.split(",")
    ]
    lengths = {value.strip() for name, value in headers if name.lower() == "content-length"}
    if codings:
        if lengths:
            raise BadRequest("a request with both Transfer-Encoding and Content-Length is ambiguous")
        if codings != ["chunked"]:
            raise BadRequest("the only Transfer-Encoding forwarded is `chunked`")
        return 0, True
    if not lengths:
        return 0, False
    if len(lengths) > 1:
        raise BadRequest("conflicting Content-Length headers")
    (length,) = lengths
    if not length.isdigit() or len(length) > 18:
        raise BadRequest("Content-Length is not a number of bytes")
    return int(length), False


def split_authority(authority: str, *, default_port: int | None) -> tuple[str, int]:
    """`host:port`, `[v6]:port` (or a bare host when `default_port` is given) -> (host, port)."""
    if authority.startswith("["):
        host, sep, rest = authority[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BadRequest(f"{authority!r} is not host:port")
        port_text = rest[1:] if rest else ""
    else:
        host, sep, port_text = authority.rpartition(":")
        if not sep:
            host, port_text = authority, ""
        elif ":" in host:
            raise BadRequest(f"{authority!r}: an IPv6 address needs brackets")
    if not port_text:
        if default_port is None:
            raise BadRequest(f"{authority!r} has no port")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadRequest(f"{authority!r} has no valid port")
    return host, int(port_text)


def _headers(lines: list[str]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise BadRequest("a header line is not `Name: value`")
        headers.append((name, value.strip()))
    return headers
