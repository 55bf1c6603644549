"""The allow-listing egress proxy: the only way a sandboxed tool reaches the network.

The tool-sandbox service runs one `EgressProxy`. Each execution whose profile names egress hosts gets its
own session: a Unix socket in a fresh private directory, served by this process. Whoever connects to that
socket is that execution, so every attempt is attributed to its tool, tenant, run and step without any
credential inside the sandbox.

A connection carries one request: `CONNECT host:port` (tunnels, e.g. HTTPS) or a plain-HTTP absolute-form
request. The destination is checked against the session's allow-list first (exact host, exact port, IP
literals only when listed; see `egress_policy`), and only then resolved and connected. Every attempt,
allowed or not, is logged and audited as `tool.egress` (outcome `ok`, `denied` or `failed`) and counted.

A sandbox without a network (bubblewrap `--unshare-net`) reaches the socket through `SandboxEgress`: the
session's directory is bind-mounted into the sandbox and `egress_forward.py` runs first inside it, listening
on the sandbox's own loopback and setting `HTTP(S)_PROXY` for the tool it then becomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentflow_runtime import context
from agentflow_runtime.audit import AuditSink
from prometheus_client import Counter

from agentflow_tool_sandbox.egress_policy import ALLOWED, Decision, HostPort, decide
from agentflow_tool_sandbox.egress_request import MAX_HEAD_BYTES, BadRequest, ProxyRequest, parse_head

log = logging.getLogger("agentflow.tool_sandbox.egress")

FORWARDER = Path(__file__).with_name("egress_forward.py")
SOCKET_NAME = "proxy.sock"
SANDBOX_DIR = "/run/agentflow-egress"
"""Where a sandbox sees the session's directory (and so the proxy's socket)."""

AUDIT_ACTION = "tool.egress"
PIPE_BYTES = 64 * 1024

EGRESS_ATTEMPTS = Counter(
    "sandbox_egress_attempts_total",
    "Connections a sandboxed tool asked the egress proxy for, by decision",
    ["tool", "decision"],
)


@dataclass(frozen=True)
class EgressGrant:
    """Who an execution is (for the audit) and where its profile lets it connect."""

    tool_id: str
    allow: frozenset[HostPort]
    tenant: str = context.DEFAULT_TENANT
    principal: str = ""
    run: str = ""
    step_id: str = ""

    @classmethod
    def for_current_call(
        cls, tool_id: str, allow: frozenset[HostPort], run: str, step_id: str
    ) -> EgressGrant:
        """A grant naming the tenant and principal of the call being served."""
        call = context.current()
        return cls(tool_id, allow, call.tenant, call.principal, run, step_id)


@dataclass(frozen=True)
class SandboxEgress:
    """What a sandbox backend adds to a command so its tool can use the session's proxy.

    - `binds`: (host path, sandbox path) pairs to bind-mount read-write (connecting to a Unix socket needs
      write permission on it);
    - `env`: variables to set for the command;
    - `wrap(python, argv)`: the argv to run instead of `argv`: the forwarder, which then execs `argv` with
      `HTTP_PROXY`/`HTTPS_PROXY` (and lowercase twins) pointing at its loopback port.
    """

    host_dir: Path
    sandbox_dir: str = SANDBOX_DIR
    port: int = 0
    """The forwarder's loopback port: 0 picks a free one (needed without a network namespace)."""

    @property
    def binds(self) -> tuple[tuple[str, str], ...]:
        return ((str(self.host_dir), self.sandbox_dir),)

    @property
    def env(self) -> dict[str, str]:
        return {"AF_EGRESS_SOCKET": f"{self.sandbox_dir}/{SOCKET_NAME}"}

    def wrap(self, python: str, argv: Sequence[str]) -> list[str]:
        socket_path = f"{self.sandbox_dir}/{SOCKET_NAME}"
        return [python, "-I", "-S", str(FORWARDER), socket_path, str(self.port), "--", *argv]

    @classmethod
    def unconfined(cls, host_dir: Path) -> SandboxEgress:
        """For a backend without mount or network namespaces: the socket at its host path, any free port."""
        return cls(host_dir=host_dir, sandbox_dir=str(host_dir), port=0)


@dataclass
class EgressSession:
    """One execution's proxy endpoint; closing it ends its connections and removes the socket."""

    grant: EgressGrant
    directory: Path
    server: asyncio.AbstractServer | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def socket_path(self) -> Path:
        return self.directory / SOCKET_NAME

    def sandbox(self, *, sandbox_dir: str = SANDBOX_DIR, port: int = 3128) -> SandboxEgress:
        """The binds, env and forwarder for a sandbox with its own mount and network namespaces."""
        return SandboxEgress(self.directory, sandbox_dir, port)

    def unconfined(self) -> SandboxEgress:
        """The forwarder for a plain process (the development backend): socket at its host path."""
        return SandboxEgress.unconfined(self.directory)


class EgressProxy:
    """Serves per-execution proxy sessions for the tool-sandbox service."""

    def __init__(
        self,
        audit: AuditSink | None = None,
        *,
        root: Path | None = None,
        connect_timeout: float = 10.0,
        head_timeout: float = 10.0,
    ) -> None:
        self.audit = audit
        self.root = root
        self.connect_timeout = connect_timeout
        self.head_timeout = head_timeout

    @asynccontextmanager
    async def session(self, grant: EgressGrant) -> AsyncIterator[EgressSession]:
        """A proxy endpoint for one execution, open for the duration of the block."""
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(prefix="af-egress-", dir=self.root))
        session = EgressSession(grant, directory)
        try:

            def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                task = asyncio.get_running_loop().create_task(self._serve(session, reader, writer))
                session.tasks.add(task)
                task.add_done_callback(session.tasks.discard)

            session.server = await asyncio.start_unix_server(
                accept, path=str(session.socket_path), limit=MAX_HEAD_BYTES
            )
            yield session
        finally:
            if session.server is not None:
                session.server.close()
            for task in list(session.tasks):
                task.cancel()
            await asyncio.gather(*session.tasks, return_exceptions=True)
            if session.server is not None:
                await session.server.wait_closed()
            shutil.rmtree(directory, ignore_errors=True)

    async def _serve(
        self, session: EgressSession, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await self._proxy(session.grant, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _proxy(
        self, grant: EgressGrant, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            request = parse_head(await self._read_head(reader))
        except BadRequest as exc:
            self._record(grant, "denied", {"reason": "bad_request", "detail": str(exc)})
            await _answer(writer, 400, "Bad Request", str(exc))
            return
        decision = decide(grant.allow, request.host, request.port)
        details: dict[str, Any] = {
            "host": decision.destination.host,
            "port": decision.destination.port,
            "method": request.method,
            "reason": decision.reason,
        }
        if not decision.allowed:
            self._record(grant, "denied", details)
            why = f"egress to {decision.destination} is not allowed by tool {grant.tool_id}'s profile"
            await _answer(writer, 403, "Forbidden", f"{why} ({decision.reason})")
            return
        try:
            upstream = await self._connect(decision)
        except (OSError, TimeoutError) as exc:
            details.update(reason="connect_failed", detail=str(exc) or type(exc).__name__)
            self._record(grant, "failed", details)
            await _answer(writer, 502, "Bad Gateway", f"cannot connect to {decision.destination}: {exc}")
            return
        up_reader, up_writer = upstream
        peer = up_writer.get_extra_info("peername")
        details["address"] = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self._record(grant, "ok", details)
        try:
            await self._relay(request, reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes:
        try:
            return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.head_timeout)
        except asyncio.LimitOverrunError as exc:
            raise BadRequest(f"the request head is longer than {MAX_HEAD_BYTES} bytes") from exc
        except asyncio.IncompleteReadError as exc:
            raise BadRequest("the connection closed before the request head ended") from exc
        except TimeoutError as exc:
            raise BadRequest("no complete request head in time") from exc

    async def _connect(self, decision: Decision) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve (only now, after the check) and connect, trying each address in turn."""
        assert decision.reason == ALLOWED
        host, port = decision.destination.host, decision.destination.port
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            error: OSError = OSError(f"{host} has no address")
            for family, _, _, _, address in infos:
                try:
                    return await asyncio.open_connection(
                        str(address[0]), port, family=family, limit=PIPE_BYTES
                    )
                except OSError as exc:
                    error = exc
            raise error

    async def _relay(
        self,
        request: ProxyRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        if request.tunnel:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        else:
            up_writer.write(request.upstream_head)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def _record(self, grant: EgressGrant, outcome: str, details: dict[str, Any]) -> None:
        details = {"run": grant.run, "step_id": grant.step_id, **details}
        EGRESS_ATTEMPTS.labels(grant.tool_id, "allowed" if outcome == "ok" else outcome).inc()
        fields = {"tool": grant.tool_id, "outcome": outcome, **details}
        if outcome == "ok":
            log.info("egress connection allowed", extra={"fields": fields})
        else:
            log.warning("egress connection refused", extra={"fields": fields})
        if self.audit is None:
            return
        call = context.CallContext(tenant=grant.tenant, principal=grant.principal, caller="tool-sandbox")
        with context.bound(call):
            self.audit.record(AUDIT_ACTION, f"tools/{grant.tool_id}", outcome, details=details)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close the other side."""
    try:
        while data := await reader.read(PIPE_BYTES):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str, message: str) -> None:
    body = (message + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    writer.write(head + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
