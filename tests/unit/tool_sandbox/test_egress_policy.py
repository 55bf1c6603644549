from __future__ import annotations

import pytest
from agentflow_tool_sandbox.egress_policy import (
    ALLOWED,
    DENIED_HOST,
    DENIED_INVALID_HOST,
    DENIED_IP_LITERAL,
    DENIED_PORT,
    HostPort,
    address_allowed,
    allow_list,
    decide,
    normalize_host,
)
from agentflow_tool_sandbox.egress_request import BadRequest, parse_head, split_authority

ALLOW = allow_list([("API.example.com.", 443), ("127.0.0.1", 8080), ("[::1]", 8443)])


def test_allow_list_is_normalised() -> None:
    assert {HostPort("api.example.com", 443), HostPort("127.0.0.1", 8080), HostPort("::1", 8443)} == ALLOW


@pytest.mark.parametrize(
    ("host", "port", "reason"),
    [
        ("api.example.com", 443, ALLOWED),
        ("Api.Example.Com.", 443, ALLOWED),
        ("127.0.0.1", 8080, ALLOWED),
        ("[::1]", 8443, ALLOWED),
        ("0:0::1", 8443, ALLOWED),  # the same IPv6 literal, written differently
        ("api.example.com", 80, DENIED_PORT),
        ("127.0.0.1", 22, DENIED_PORT),
        ("example.com", 443, DENIED_HOST),  # no suffix or parent matching
        ("x.api.example.com", 443, DENIED_HOST),
        ("api.example.com.evil.net", 443, DENIED_HOST),
        ("10.0.0.1", 443, DENIED_IP_LITERAL),
        ("169.254.169.254", 80, DENIED_IP_LITERAL),
        ("127.1", 8080, DENIED_IP_LITERAL),  # what inet_aton reads as 127.0.0.1: never resolved
        ("2130706433", 8080, DENIED_IP_LITERAL),
        ("0x7f000001", 8080, DENIED_IP_LITERAL),
        ("api.example.com\r\nX: y", 443, DENIED_INVALID_HOST),
        ("under_score.example.com", 443, DENIED_INVALID_HOST),
        ("", 443, DENIED_INVALID_HOST),
        ("api.example.com", 0, DENIED_INVALID_HOST),
        ("api.example.com", 70000, DENIED_INVALID_HOST),
    ],
)
def test_decide(host: str, port: int, reason: str) -> None:
    assert decide(ALLOW, host, port).reason == reason


@pytest.mark.parametrize(
    ("address", "port", "allowed"),
    [
        ("93.184.216.34", 443, True),  # a public address behind an allowed name
        ("2606:2800:220:1:248:1893:25c8:1946", 443, True),
        ("::ffff:93.184.216.34", 443, True),
        ("127.0.0.1", 8080, True),  # internal, but that literal is listed for the port
        ("::1", 8443, True),
        ("127.0.0.1", 443, False),  # listed, but not for this port
        ("127.0.0.2", 8080, False),  # loopback
        ("::ffff:127.0.0.1", 443, False),
        ("169.254.169.254", 80, False),  # link-local: cloud metadata
        ("fe80::1%eth0", 443, False),
        ("10.0.0.7", 443, False),  # private
        ("192.168.1.1", 443, False),
        ("fd00::1", 443, False),
        ("100.64.0.1", 443, False),  # shared (carrier-grade NAT)
        ("0.0.0.0", 443, False),  # unspecified
        ("::", 443, False),
        ("224.0.0.1", 443, False),  # multicast
        ("ff02::1", 443, False),
        ("240.0.0.1", 443, False),  # reserved
        ("192.0.2.1", 443, False),  # documentation
        ("not an address", 443, False),
    ],
)
def test_resolved_addresses_must_be_public_unless_listed(address: str, port: int, allowed: bool) -> None:
    assert address_allowed(ALLOW, address, port) is allowed


def test_nothing_is_allowed_by_an_empty_list() -> None:
    assert not decide(frozenset(), "api.example.com", 443).allowed


@pytest.mark.parametrize("entry", [("bad host", 443), ("ok.example.com", 0), ("ok.example.com", 65536)])
def test_allow_list_rejects_invalid_entries(entry: tuple[str, int]) -> None:
    with pytest.raises(ValueError, match="egress"):
        allow_list([entry])


def test_normalize_host() -> None:
    assert normalize_host("[2001:DB8::1]") == "2001:db8::1"
    assert normalize_host("a-b.example.") == "a-b.example"
    assert normalize_host("-bad.example") is None
    assert normalize_host("x" * 300) is None


def test_connect_request() -> None:
    request = parse_head(b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n")
    assert (request.method, request.host, request.port, request.tunnel) == (
        "CONNECT",
        "api.example.com",
        443,
        True,
    )


def test_absolute_form_is_rewritten_to_origin_form_without_proxy_headers() -> None:
    head = (
        b"GET http://127.0.0.1:8080/a/b?c=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Proxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n"
    )
    request = parse_head(head)
    assert (request.host, request.port, request.tunnel) == ("127.0.0.1", 8080, False)
    assert request.upstream_head == (
        b"GET /a/b?c=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    assert parse_head(b"GET http://example.com HTTP/1.0\r\n\r\n").port == 80


def test_the_host_header_names_the_checked_destination() -> None:
    head = b"GET http://allowed.example/x HTTP/1.1\r\nHost: internal.example\r\nhost: other\r\n\r\n"
    assert parse_head(head).upstream_head == (
        b"GET /x HTTP/1.1\r\nHost: allowed.example\r\nConnection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    "head",
    [
        b"GET /relative HTTP/1.1\r\n\r\n",  # origin form: not a proxy request
        b"GET https://example.com/ HTTP/1.1\r\n\r\n",  # https goes through CONNECT
        b"CONNECT example.com HTTP/1.1\r\n\r\n",  # no port
        b"CONNECT example.com:99999 HTTP/1.1\r\n\r\n",
        b"CONNECT ::1:443 HTTP/1.1\r\n\r\n",  # IPv6 without brackets
        b"GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n",
        b"hello\r\n\r\n",
        b"GET http://example.com/ HTTP/1.1\r\nno colon here\r\n\r\n",
    ],
)
def test_bad_requests(head: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_head(head)


def test_the_body_framing_is_read_from_the_head() -> None:
    def framing(headers: bytes) -> tuple[int, bool]:
        request = parse_head(b"POST http://h/x HTTP/1.1\r\n" + headers + b"\r\n")
        return request.body_length, request.chunked

    assert framing(b"") == (0, False)
    assert framing(b"Content-Length: 12\r\n") == (12, False)
    assert framing(b"Content-Length: 12\r\ncontent-length: 12\r\n") == (12, False)  # the same value twice
    assert framing(b"Transfer-Encoding: Chunked\r\n") == (0, True)
    for ambiguous in (
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Content-Length: 1\r\nContent-Length: 2\r\n",
        b"Content-Length: 0x10\r\n",
    ):
        with pytest.raises(BadRequest):
            framing(ambiguous)


def test_split_authority() -> None:
    assert split_authority("[::1]:443", default_port=None) == ("::1", 443)
    assert split_authority("example.com", default_port=80) == ("example.com", 80)
