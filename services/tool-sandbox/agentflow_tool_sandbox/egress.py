"""The allow-listing egress proxy: the only way a sandboxed tool reaches the network.

The tool-sandbox service runs one `EgressProxy`. Each execution whose profile names egress hosts gets its
own session: a Unix socket in a fresh private directory, served by this process. Whoever connects to that
socket is that execution, so every attempt is attributed to its tool, tenant, run and step without any
credential inside the sandbox.

A connection carries one request: `CONNECT host:port` (tunnels, e.g. HTTPS) or a plain-HTTP absolute-form
request (its head and body forwarded, nothing after them: `egress_body`). The destination is checked
against the session's allow-list first (exact host, exact port, IP literals only when listed; see
`egress_policy`), and only then resolved; each resolved address is checked again (internal ones only when
their literal is listed) and connected. Every attempt, allowed or not, is logged and audited as
`tool.egress` (outcome `ok`, `denied` or `failed`) and counted.

A sandbox without a network (bubblewrap `--unshare-net`) reaches the socket through `SandboxEgress`: the
session's directory is bind-mounted into the sandbox and `egress_forward.py` runs first inside it, listening
on the sandbox's own loopback and setting `HTTP(S)_PROXY` for the tool it then becomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentflow_runtime import context
from agentflow_runtime.audit import AuditSink
from prometheus_client import Counter

from agentflow_tool_sandbox.call_metrics import SANDBOX_DENIALS
from agentflow_tool_sandbox.egress_body import forward_body
from agentflow_tool_sandbox.egress_policy import (
    ALLOWED,
    DENIED_ADDRESS,
    Decision,
    HostPort,
    address_allowed,
    allow_list,
    decide,
)
from agentflow_tool_sandbox.egress_request import MAX_HEAD_BYTES, BadRequest, ProxyRequest, parse_head
from agentflow_tool_sandbox.network import CallInfo, Mount, NetworkAccess
from agentflow_tool_sandbox.spec import PYTHON_PLACEHOLDER, EgressRule

log = logging.getLogger("agentflow.tool_sandbox.egress")

FORWARDER = Path(__file__).with_name("egress_forward.py")
SOCKET_NAME = "proxy.sock"
SANDBOX_DIR = "/run/agentflow-egress"
"""Where a sandbox sees the session's directory (and so the proxy's socket)."""
SANDBOX_FORWARDER = "/sandbox/egress_forward.py"
"""Where a sandbox sees the forwarder script."""
FORWARDER_PORT = 3128
"""The forwarder's port on a sandbox's own loopback."""
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
MAX_SOCKET_PATH = 100
"""Unix socket paths are limited to 108 bytes; beyond this the session lives in the system temp dir."""

AUDIT_ACTION = "tool.egress"
MAX_CONNECTIONS = 64
"""Connections one call may have open through the proxy at once; more are refused (503, audited)."""
PIPE_BYTES = 64 * 1024

_STEP: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("af_egress_step", default=("", ""))


def bind_step(run: str, step_id: str) -> None:
    """Name the run and step of the ExecuteTool call being served, for the audit of its egress attempts.

    Set once in the servicer's task; an execution started from it (even in a background task) sees it.
    """
    _STEP.set((run, step_id))


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


@dataclass(frozen=True)
class SandboxEgress:
    """What a sandbox backend adds to a call so its tool can use the session's proxy.

    - `binds`: (host path, sandbox path, writable) to bind-mount: the session's directory read-write
      (connecting to a Unix socket needs write permission on it) and the forwarder script read-only;
    - `env`: variables to set for the call (the proxy variables, when the port is known in advance);
    - `prefix(python)`: the argv to put before the tool's own (after any launcher that drops privileges
      and applies rlimits): the forwarder, which then execs the tool with the proxy variables set.
    """

    host_dir: Path
    sandbox_dir: str = SANDBOX_DIR
    forwarder: str = SANDBOX_FORWARDER
    port: int = FORWARDER_PORT
    """The forwarder's loopback port: 0 picks a free one (needed without a network namespace)."""

    @property
    def socket_path(self) -> str:
        return f"{self.sandbox_dir}/{SOCKET_NAME}"

    @property
    def binds(self) -> tuple[tuple[str, str, bool], ...]:
        return ((str(self.host_dir), self.sandbox_dir, True), (str(FORWARDER), self.forwarder, False))

    @property
    def env(self) -> dict[str, str]:
        env = {"AF_EGRESS_SOCKET": self.socket_path}
        if self.port:
            proxy = f"http://127.0.0.1:{self.port}"
            for name in PROXY_VARIABLES:
                env[name] = env[name.lower()] = proxy
            env["NO_PROXY"] = env["no_proxy"] = ""
        return env

    def prefix(self, python: str) -> list[str]:
        return [python, "-I", "-S", self.forwarder, self.socket_path, str(self.port), "--"]

    def wrap(self, python: str, argv: Sequence[str]) -> list[str]:
        return [*self.prefix(python), *argv]


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

    def sandbox(self) -> SandboxEgress:
        """The binds, env and forwarder for a sandbox with its own mount and network namespaces."""
        return SandboxEgress(self.directory)

    def unconfined(self) -> SandboxEgress:
        """For a plain process (the development backend): the socket and forwarder at their host paths, the
        forwarder on any free port of the host's loopback (it sets the proxy variables itself)."""
        return SandboxEgress(self.directory, str(self.directory), str(FORWARDER), port=0)


class EgressProxy:
    """Serves per-execution proxy sessions for the tool-sandbox service."""

    def __init__(
        self,
        audit: AuditSink | None = None,
        *,
        root: Path | None = None,
        connect_timeout: float = 10.0,
        head_timeout: float = 10.0,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.audit = audit
        self.root = root
        self.connect_timeout = connect_timeout
        self.head_timeout = head_timeout
        self.max_connections = max_connections

    def attach(
        self, call: CallInfo, rules: Sequence[EgressRule]
    ) -> AbstractAsyncContextManager[NetworkAccess]:
        """`network.EgressProvider`: a session for one sandboxed call, as mounts, env and the forwarder."""
        return self._attach(call, rules)

    @asynccontextmanager
    async def _attach(self, call: CallInfo, rules: Sequence[EgressRule]) -> AsyncIterator[NetworkAccess]:
        run, step_id = _STEP.get()
        allow = _usable_rules(call.tool_id, rules)
        grant = EgressGrant(call.tool_id, allow, call.tenant, call.principal, run, step_id)
        async with self.session(grant) as session:
            egress = session.sandbox()
            yield NetworkAccess(
                mounts=tuple(Mount(source, target, writable) for source, target, writable in egress.binds),
                env=egress.env,
                command_prefix=tuple(egress.prefix(PYTHON_PLACEHOLDER)),
            )

    @asynccontextmanager
    async def session(self, grant: EgressGrant) -> AsyncIterator[EgressSession]:
        """A proxy endpoint for one execution, open for the duration of the block."""
        root = self.root
        if root is not None:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            if len(str(root.resolve())) + len("/af-egress-XXXXXXXX/" + SOCKET_NAME) > MAX_SOCKET_PATH:
                root = None
        directory = Path(tempfile.mkdtemp(prefix="af-egress-", dir=root))
        # The tool may run under a uid of its own: it must cross the directory and connect to the socket.
        # Outside the sandbox the directory's name is random and its parent private (0700).
        os.chmod(directory, 0o711)
        session = EgressSession(grant, directory)
        try:

            def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                task = asyncio.get_running_loop().create_task(self._serve(session, reader, writer))
                session.tasks.add(task)
                task.add_done_callback(session.tasks.discard)

            session.server = await asyncio.start_unix_server(
                accept, path=str(session.socket_path), limit=MAX_HEAD_BYTES
            )
            os.chmod(session.socket_path, 0o666)
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
            await self._proxy(session, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("egress connection failed", extra={"fields": {"tool": session.grant.tool_id}})
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _proxy(
        self, session: EgressSession, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        grant = session.grant
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
        if decision.allowed and len(session.tasks) > self.max_connections:
            why = f"more than {self.max_connections} connections at once from one call"
            details.update(reason="too_many_connections")
            self._record(grant, "denied", details)
            await _answer(writer, 503, "Service Unavailable", why)
            return
        if not decision.allowed:
            self._record(grant, "denied", details)
            why = f"egress to {decision.destination} is not allowed by tool {grant.tool_id}'s profile"
            await _answer(writer, 403, "Forbidden", f"{why} ({decision.reason})")
            return
        try:
            upstream = await self._connect(decision, grant.allow)
        except AddressRefused as exc:
            addresses = ", ".join(exc.addresses)
            details.update(reason=DENIED_ADDRESS, addresses=addresses)
            self._record(grant, "denied", details)
            why = f"{decision.destination.host} resolves only to internal addresses ({addresses})"
            await _answer(
                writer,
                403,
                "Forbidden",
                f"{why}, not listed in tool {grant.tool_id}'s profile ({DENIED_ADDRESS})",
            )
            return
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

    async def _connect(
        self, decision: Decision, allow: frozenset[HostPort]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve (only now, after the check) and connect, trying each address the policy accepts in turn
        (`address_allowed`); AddressRefused when it accepts none of them."""
        assert decision.reason == ALLOWED
        host, port = decision.destination.host, decision.destination.port
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            usable = [info for info in infos if address_allowed(allow, str(info[4][0]), port)]
            if infos and not usable:
                raise AddressRefused(sorted({str(info[4][0]) for info in infos}))
            error: OSError = OSError(f"{host} has no address")
            for family, _, _, _, address in usable:
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
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return
        # Plain HTTP: this one request's head and body go up, nothing after them (a pipelined request
        # would reach the upstream unchecked); the response comes back until the upstream closes.
        up_writer.write(request.upstream_head)
        body = asyncio.ensure_future(_send_body(request, reader, up_writer))
        try:
            await _pipe(up_reader, writer)
        finally:
            body.cancel()
            await asyncio.gather(body, return_exceptions=True)

    def _record(self, grant: EgressGrant, outcome: str, details: dict[str, Any]) -> None:
        details = {"run": grant.run, "step_id": grant.step_id, **details}
        EGRESS_ATTEMPTS.labels(grant.tool_id, "allowed" if outcome == "ok" else outcome).inc()
        if outcome == "denied":
            SANDBOX_DENIALS.labels(tool=grant.tool_id, reason="egress").inc()
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


class AddressRefused(Exception):
    """An allowed name resolved only to addresses the policy refuses (internal ones, not listed)."""

    def __init__(self, addresses: list[str]) -> None:
        super().__init__(", ".join(addresses))
        self.addresses = addresses


def _usable_rules(tool_id: str, rules: Sequence[EgressRule]) -> frozenset[HostPort]:
    """The profile's rules as an allow-list; a rule this proxy cannot read allows nothing (logged)."""
    allowed: set[HostPort] = set()
    for rule in rules:
        try:
            allowed |= allow_list([(rule.host, rule.port)])
        except ValueError as exc:
            log.error("egress rule ignored", extra={"fields": {"tool": tool_id, "problem": str(exc)}})
    return frozenset(allowed)


async def _send_body(
    request: ProxyRequest, reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
) -> None:
    """Forward the request's body; a malformed or short one aborts the upstream connection."""
    try:
        await forward_body(request, reader, up_writer)
    except (BadRequest, asyncio.IncompleteReadError) as exc:
        log.warning("egress request body refused", extra={"fields": {"problem": str(exc)}})
        up_writer.close()
    except (ConnectionError, OSError):
        up_writer.close()


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
