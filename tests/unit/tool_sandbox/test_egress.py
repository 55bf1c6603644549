"""The egress proxy on real sockets: a local origin server, per-execution Unix sockets, the forwarder run by
a plain process and inside bubblewrap, and the audit record of every attempt."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from agentflow_runtime import context
from agentflow_runtime.audit import AuditSink
from agentflow_tool_sandbox.bwrap import BwrapConfig, BwrapRunner
from agentflow_tool_sandbox.egress import FORWARDER, EgressGrant, EgressProxy, EgressSession, bind_step
from agentflow_tool_sandbox.egress_policy import allow_list
from agentflow_tool_sandbox.events import Chunk, Result
from agentflow_tool_sandbox.executor import ProcessRunner
from agentflow_tool_sandbox.probe import probe
from agentflow_tool_sandbox.spec import EgressRule, Permissions, ProcessSpec

from .conftest import SAFETY_TIMEOUT, collect, limits, stdout_of


@dataclass(frozen=True)
class Recorded:
    action: str
    resource: str
    outcome: str
    details: dict[str, Any]
    tenant: str
    principal: str


class RecordingAudit(AuditSink):
    """Keeps what would be appended to the audit service (with the bound tenant and principal)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.events: list[Recorded] = []

    def record(
        self, action: str, resource: str, outcome: str = "ok", details: dict[str, Any] | None = None
    ) -> None:
        call = context.current()
        self.events.append(
            Recorded(action, resource, outcome, dict(details or {}), call.tenant, call.principal)
        )


BIG = bytes(range(256)) * (16 * 1024)  # 4 MiB


@pytest.fixture
async def origin() -> AsyncIterator[int]:
    """An HTTP server on 127.0.0.1 that answers every request with its own request line."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:  # a tunnel closed without a request
            writer.close()
            return
        line = head.split(b"\r\n", 1)[0]
        body = BIG if b" /big " in line else b"origin saw " + line
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@dataclass
class Recorder:
    """An origin that reads one request (head and body, by its framing), answers, then keeps reading until
    the proxy closes the connection: `received` gets what came after the request (b"" when nothing)."""

    port: int
    requests: asyncio.Queue[tuple[bytes, bytes, bytes]]


@pytest.fixture
async def recording_origin() -> AsyncIterator[Recorder]:
    requests: asyncio.Queue[tuple[bytes, bytes, bytes]] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lowered = head.lower()
        body = b""
        if b"\r\ncontent-length: " in lowered:
            body = await reader.readexactly(int(lowered.split(b"content-length: ")[1].split(b"\r\n")[0]))
        elif b"\r\ntransfer-encoding: chunked" in lowered:
            body = await reader.readuntil(b"0\r\n\r\n")
        answer = b"one request"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
        await writer.drain()
        writer.write_eof()
        after = await reader.read()  # until the proxy closes: whatever else it forwarded
        await requests.put((head, body, after))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield Recorder(server.sockets[0].getsockname()[1], requests)
    server.close()
    await server.wait_closed()


@pytest.fixture
def audit() -> RecordingAudit:
    return RecordingAudit()


def grant(port: int) -> EgressGrant:
    allow = allow_list([("127.0.0.1", port), ("localhost", port)])
    return EgressGrant("fetcher", allow, tenant="acme", principal="alice", run="runs/r1", step_id="fetch")


async def ask(session: EgressSession, head: bytes, then: bytes = b"") -> bytes:
    """Send `head` (and, once the proxy answered a CONNECT, `then`) over the session's socket."""
    reader, writer = await asyncio.open_unix_connection(str(session.socket_path))
    writer.write(head)
    if then:
        status = await reader.readuntil(b"\r\n\r\n")
        writer.write(then)
        head = status
    else:
        head = b""
    reply = head + await asyncio.wait_for(reader.read(), SAFETY_TIMEOUT)
    writer.close()
    return reply


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_connect_to_an_allowed_host_is_tunnelled_and_audited(
    origin: int, audit: RecordingAudit
) -> None:
    proxy = EgressProxy(audit)
    async with proxy.session(grant(origin)) as session:
        reply = await ask(
            session,
            b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % origin,
            b"GET /through-the-tunnel HTTP/1.1\r\nHost: x\r\n\r\n",
        )
    assert reply.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK")
    assert reply.endswith(b"origin saw GET /through-the-tunnel HTTP/1.1")
    [event] = audit.events
    assert (event.action, event.resource, event.outcome) == ("tool.egress", "tools/fetcher", "ok")
    assert (event.tenant, event.principal) == ("acme", "alice")
    assert event.details == {
        "run": "runs/r1",
        "step_id": "fetch",
        "host": "127.0.0.1",
        "port": origin,
        "method": "CONNECT",
        "reason": "allowed",
        "address": "127.0.0.1",
    }


async def test_a_listed_name_is_resolved_after_the_check(origin: int, audit: RecordingAudit) -> None:
    """`localhost` is listed, and so is the literal 127.0.0.1 it resolves to: that address is allowed."""
    async with EgressProxy(audit).session(grant(origin)) as session:
        reply = await ask(session, b"GET http://localhost:%d/by-name?q=1 HTTP/1.1\r\n\r\n" % origin)
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert reply.endswith(b"origin saw GET /by-name?q=1 HTTP/1.1")
    [event] = audit.events
    assert (event.outcome, event.details["host"], event.details["method"]) == ("ok", "localhost", "GET")
    assert event.details["address"] in {"127.0.0.1", "::1"}


@pytest.mark.parametrize("method", ["CONNECT", "GET"])
async def test_a_listed_name_resolving_to_an_internal_address_is_refused(
    origin: int, audit: RecordingAudit, method: str
) -> None:
    """Only the name is listed: that it resolves to loopback (or metadata, or a private network) does not
    open the service host's own services to the tool."""
    only_name = EgressGrant("fetcher", allow_list([("localhost", origin)]), run="runs/r1", step_id="fetch")
    head = (
        b"CONNECT localhost:%d HTTP/1.1\r\n\r\n" % origin
        if method == "CONNECT"
        else b"GET http://localhost:%d/internal HTTP/1.1\r\n\r\n" % origin
    )
    async with EgressProxy(audit).session(only_name) as session:
        reply = await ask(session, head)
    assert reply.startswith(b"HTTP/1.1 403 Forbidden")
    assert b"address_not_allowed" in reply and b"origin saw" not in reply
    [event] = audit.events
    assert (event.outcome, event.details["host"], event.details["reason"]) == (
        "denied",
        "localhost",
        "address_not_allowed",
    )
    assert "127.0.0.1" in event.details["addresses"]
    assert "address" not in event.details  # nothing was connected


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("example.com:443", "host_not_allowed"),
        ("127.0.0.1:{other}", "port_not_allowed"),
        ("127.0.0.2:{port}", "ip_literal_not_allowed"),
        ("127.1:{port}", "ip_literal_not_allowed"),
    ],
)
async def test_other_destinations_are_refused_and_audited(
    origin: int, audit: RecordingAudit, target: str, reason: str
) -> None:
    target = target.format(port=origin, other=free_port())
    async with EgressProxy(audit).session(grant(origin)) as session:
        reply = await ask(session, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403 Forbidden")
    assert reason.encode() in reply
    [event] = audit.events
    assert (event.action, event.outcome, event.details["reason"]) == ("tool.egress", "denied", reason)
    assert f"{event.details['host']}:{event.details['port']}" == target


SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: internal.example\r\n\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "body_seen"),
    [
        (b"GET http://127.0.0.1:{port}/first HTTP/1.1\r\nHost: x\r\n\r\n", b""),
        (b"POST http://127.0.0.1:{port}/form HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (
            b"POST http://127.0.0.1:{port}/up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n06\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",  # re-framed: no extension, no trailer
        ),
    ],
)
async def test_a_pipelined_second_request_never_reaches_the_upstream(
    recording_origin: Recorder, audit: RecordingAudit, request_bytes: bytes, body_seen: bytes
) -> None:
    """Plain HTTP: the proxy forwards the one request it checked (head and body by their framing) and
    nothing the tool sends after it, such as a second request for another virtual host."""
    port = recording_origin.port
    first = request_bytes.replace(b"{port}", b"%d" % port)
    async with EgressProxy(audit).session(grant(port)) as session:
        reply = await ask(session, first + SMUGGLED)
        head, body, after = await asyncio.wait_for(recording_origin.requests.get(), SAFETY_TIMEOUT)
    assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"one request")
    assert head.startswith(first.split(b" ", 1)[0] + b" /") and b"Host: 127.0.0.1:%d\r\n" % port in head
    assert body == body_seen
    assert after == b""  # the smuggled request was never forwarded
    assert b"internal.example" not in head + body + after
    assert [event.outcome for event in audit.events] == ["ok"]


@pytest.mark.parametrize(
    "framing",
    [
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: -1\r\n",
    ],
)
async def test_a_body_two_parsers_could_read_differently_is_refused(
    recording_origin: Recorder, audit: RecordingAudit, framing: bytes
) -> None:
    port = recording_origin.port
    head = b"POST http://127.0.0.1:%d/x HTTP/1.1\r\n%s\r\n" % (port, framing)
    async with EgressProxy(audit).session(grant(port)) as session:
        reply = await ask(session, head + b"hello" + SMUGGLED)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request")
    [event] = audit.events
    assert (event.outcome, event.details["reason"]) == ("denied", "bad_request")
    assert recording_origin.requests.empty()  # nothing was connected


async def test_a_request_that_is_not_a_proxy_request_is_refused(audit: RecordingAudit) -> None:
    async with EgressProxy(audit).session(grant(80)) as session:
        reply = await ask(session, b"GET /not-absolute HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request")
    [event] = audit.events
    assert (event.outcome, event.details["reason"]) == ("denied", "bad_request")


async def test_an_unreachable_allowed_host_is_a_502_audited_as_failed(audit: RecordingAudit) -> None:
    closed = free_port()
    async with EgressProxy(audit).session(grant(closed)) as session:
        reply = await ask(session, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % closed)
    assert reply.startswith(b"HTTP/1.1 502 Bad Gateway")
    [event] = audit.events
    assert (event.outcome, event.details["reason"]) == ("failed", "connect_failed")


async def test_closing_a_session_ends_its_tunnels_and_removes_its_socket(origin: int, tmp_path: Path) -> None:
    proxy = EgressProxy(root=tmp_path / "egress")
    async with proxy.session(grant(origin)) as session:
        reader, writer = await asyncio.open_unix_connection(str(session.socket_path))
        writer.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % origin)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        directory = session.directory
        assert directory.parent == tmp_path / "egress"
    assert await asyncio.wait_for(reader.read(), SAFETY_TIMEOUT) == b""  # the tunnel was closed
    writer.close()
    assert not directory.exists()


FETCH = """
    import http.client, json, os, sys, urllib.error, urllib.request
    port = int(sys.argv[1])
    proxy = os.environ["HTTPS_PROXY"]
    plain = urllib.request.urlopen(f"http://127.0.0.1:{port}/plain", timeout=30).read().decode()
    host, _, proxy_port = proxy.removeprefix("http://").partition(":")
    tunnel = http.client.HTTPConnection(host, int(proxy_port), timeout=30)
    tunnel.set_tunnel("127.0.0.1", port)
    tunnel.request("GET", "/tunnelled")
    tunnelled = tunnel.getresponse().read().decode()
    try:
        urllib.request.urlopen("http://example.com/", timeout=30)
        refused = None
    except urllib.error.HTTPError as exc:
        refused = exc.code
    big = len(urllib.request.urlopen(f"http://127.0.0.1:{port}/big", timeout=30).read())
    seen = {"proxy": proxy, "plain": plain, "tunnelled": tunnelled, "refused": refused, "big": big}
    print(json.dumps(seen))
"""


def fetch_source() -> str:
    return textwrap.dedent(FETCH)


async def test_the_forwarder_gives_a_plain_process_the_proxy(
    origin: int, audit: RecordingAudit, runner: ProcessRunner
) -> None:
    async with EgressProxy(audit).session(grant(origin)) as session:
        egress = session.unconfined()
        argv = egress.wrap("{python}", ["{python}", "-c", fetch_source(), str(origin)])
        chunks, result = await collect(runner.execute(ProcessSpec(tuple(argv), egress.env), limits(), {}))
    assert result.exit_code == 0, result.stderr
    seen = json.loads(stdout_of(chunks))
    assert seen["proxy"].startswith("http://127.0.0.1:")
    assert seen["plain"] == "origin saw GET /plain HTTP/1.1"
    assert seen["tunnelled"] == "origin saw GET /tunnelled HTTP/1.1"
    assert seen["refused"] == 403
    assert seen["big"] == len(BIG)  # 4 MiB through the forwarder and the proxy, nothing lost
    assert [(e.outcome, e.details["method"], e.details["host"]) for e in audit.events] == [
        ("ok", "GET", "127.0.0.1"),
        ("ok", "CONNECT", "127.0.0.1"),
        ("denied", "GET", "example.com"),
        ("ok", "GET", "127.0.0.1"),
    ]


BWRAP = shutil.which("bwrap")


@pytest.mark.skipif(BWRAP is None, reason="bubblewrap is not installed")
async def test_the_forwarder_reaches_the_proxy_from_a_sandbox_without_network(
    origin: int, audit: RecordingAudit, tmp_path: Path
) -> None:
    """Inside `bwrap --unshare-all` only the proxy's socket leads out; a direct connection fails."""
    source = fetch_source() + textwrap.dedent("""
        import socket
        for address in (("127.0.0.1", port), ("192.0.2.1", 80)):
            try:
                socket.create_connection(address, timeout=5).close()
                print("direct: connected")
            except OSError as exc:
                print("direct:", exc.strerror)
    """)
    async with EgressProxy(audit).session(grant(origin)) as session:
        # The forwarder at its host path (visible through `--ro-bind / /`); the socket's directory where a
        # sandbox backend mounts it.
        egress = replace(session.sandbox(), forwarder=str(FORWARDER))
        argv = [str(BWRAP), "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        argv += ["--clearenv", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/run"]
        for host_path, sandbox_path, writable in egress.binds:
            if sandbox_path != egress.forwarder:
                argv += ["--bind" if writable else "--ro-bind", host_path, sandbox_path]
        for name, value in egress.env.items():
            argv += ["--setenv", name, value]
        argv += egress.wrap(sys.executable, [sys.executable, "-c", source, str(origin)])
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), SAFETY_TIMEOUT)
    assert process.returncode == 0, err.decode()
    first, loopback, outside = out.decode().splitlines()
    seen = json.loads(first)
    assert seen["proxy"] == "http://127.0.0.1:3128"
    assert seen["plain"] == "origin saw GET /plain HTTP/1.1"
    assert seen["tunnelled"] == "origin saw GET /tunnelled HTTP/1.1"
    assert seen["refused"] == 403
    assert loopback == "direct: Connection refused"  # the sandbox's own loopback, not the host's
    assert outside == "direct: Network is unreachable"
    assert seen["big"] == len(BIG)
    assert [(e.outcome, e.details["method"]) for e in audit.events] == [
        ("ok", "GET"),
        ("ok", "CONNECT"),
        ("denied", "GET"),
        ("ok", "GET"),
    ]


@pytest.mark.skipif(BWRAP is None, reason="bubblewrap is not installed")
async def test_the_bubblewrap_backend_gives_a_profile_with_hosts_the_proxy_and_nothing_else(
    origin: int, audit: RecordingAudit, tmp_path: Path
) -> None:
    """Through `EgressProvider`: the backend's own sandbox (own uid, rlimits, no network), our proxy."""
    runner = BwrapRunner(BwrapConfig(egress=EgressProxy(audit, root=tmp_path / "egress")))
    runner.mark_available(await probe(runner))
    assert runner.unavailable is None, runner.unavailable
    source = fetch_source() + textwrap.dedent("""
        import socket
        try:
            socket.create_connection(("192.0.2.1", 80), timeout=5).close()
            print("direct: connected")
        except OSError as exc:
            print("direct:", exc.strerror)
    """)
    tool = ProcessSpec(("{python}", "-c", source, str(origin)))
    permissions = Permissions(egress=(EgressRule("127.0.0.1", origin),))

    async def call() -> tuple[list[Chunk], Result]:  # its own task: the bound step ends with it
        bind_step("runs/r9", "fetch-step")
        with context.bound(context.CallContext(tenant="acme", principal="bob")):
            return await collect(
                runner.execute(tool, limits(), {}, permissions=permissions, tool_id="fetcher")
            )

    chunks, result = await asyncio.create_task(call())
    assert result.exit_code == 0, result.stderr
    first, direct = stdout_of(chunks).decode().splitlines()
    seen = json.loads(first)
    assert seen["proxy"] == "http://127.0.0.1:3128"
    assert seen["plain"] == "origin saw GET /plain HTTP/1.1"
    assert seen["tunnelled"] == "origin saw GET /tunnelled HTTP/1.1"
    assert seen["refused"] == 403
    assert direct == "direct: Network is unreachable"
    assert seen["big"] == len(BIG)  # 4 MiB through the forwarder and the proxy, nothing lost
    assert [(e.outcome, e.details["method"], e.details["host"]) for e in audit.events] == [
        ("ok", "GET", "127.0.0.1"),
        ("ok", "CONNECT", "127.0.0.1"),
        ("denied", "GET", "example.com"),
        ("ok", "GET", "127.0.0.1"),
    ]
    assert {(e.tenant, e.principal, e.resource) for e in audit.events} == {("acme", "bob", "tools/fetcher")}
    assert {(e.details["run"], e.details["step_id"]) for e in audit.events} == {("runs/r9", "fetch-step")}
    assert not list((tmp_path / "egress").iterdir())  # the call's socket is gone with the call


async def test_a_call_cannot_hold_more_than_its_share_of_connections(
    origin: int, audit: RecordingAudit
) -> None:
    async with EgressProxy(audit, max_connections=2).session(grant(origin)) as session:
        tunnels = []
        for _ in range(2):
            reader, writer = await asyncio.open_unix_connection(str(session.socket_path))
            writer.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % origin)
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            tunnels.append(writer)
        reply = await ask(session, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % origin)
        for writer in tunnels:
            writer.close()
    assert reply.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert [(e.outcome, e.details["reason"]) for e in audit.events] == [
        ("ok", "allowed"),
        ("ok", "allowed"),
        ("denied", "too_many_connections"),
    ]


def forwarders_of(socket_path: str) -> list[int]:
    """Live processes whose command line names `socket_path` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if socket_path.encode() in cmdline.split(b"\0"):
                found.append(int(entry.name))
    return found


async def test_the_forwarder_ends_with_its_tool_even_outside_a_sandbox(tmp_path: Path) -> None:
    """Nobody kills its process group here: the forwarder notices the tool is gone and exits."""
    socket_path = str(tmp_path / "unused.sock")
    tool = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", str(FORWARDER), socket_path, "0", "--", sys.executable, "-c", "pass"
    )
    assert await tool.wait() == 0
    for _ in range(int(SAFETY_TIMEOUT * 10)):  # a safety net, not a timing assertion
        if not forwarders_of(socket_path):
            break
        await asyncio.sleep(0.1)
    assert forwarders_of(socket_path) == []
