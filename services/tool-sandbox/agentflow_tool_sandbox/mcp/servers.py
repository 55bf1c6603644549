"""The MCP servers the sandbox knows: registrations, live connections, imported tools and calls to them.

- Registrations: catalog servers (global, read-only, from `catalog/mcp/*.yaml`) and API servers (per tenant).
- Import: connect, `tools/list` (all pages), give each remote tool a stable id (`naming`), store the list.
  Done at registration, at start (in the background), on `notifications/tools/list_changed`, after a
  reconnect, and on SyncMcpServer.
- Policy: API-registered servers get only what the operator delegates (`policy`): checked at registration
  (InvalidArgument with field violations, nothing stored) and before every connection (refused, not retried).
- Calls: the server's circuit breaker first (open → UNAVAILABLE `MCP_CIRCUIT_OPEN`, nothing sent), then
  attempts with backoff while the server cannot be reached, each within the server's timeout. A call that
  reached the server is never repeated (it may have acted). Connection failures and timeouts count against
  the breaker; an answer (even a tool error) closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from agentflow_runtime.breaker import CircuitBreaker, CircuitState
from agentflow_runtime.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from mcp import ClientSession, types
from mcp.shared.exceptions import McpError

from agentflow_tool_sandbox.events import Chunk, Event, Result, Stream, Usage
from agentflow_tool_sandbox.mcp import naming
from agentflow_tool_sandbox.mcp.connection import ConnectionLost, ServerConnection
from agentflow_tool_sandbox.mcp.documents import spec_from_document, spec_to_document
from agentflow_tool_sandbox.mcp.model import ServerSpec
from agentflow_tool_sandbox.mcp.policy import ServerPolicy
from agentflow_tool_sandbox.mcp.results import result_events
from agentflow_tool_sandbox.mcp.stdio_launch import LaunchConfig
from agentflow_tool_sandbox.mcp.store import ImportedTool, McpStore, StoredServer, now
from agentflow_tool_sandbox.spec import ORIGIN_API, ORIGIN_MCP, Limits, McpBinding, ProcessSpec, ToolSpec

log = logging.getLogger("agentflow.tool_sandbox.mcp")

T = TypeVar("T")
CONNECT_TIMEOUT = 15.0
LIST_TIMEOUT = 30.0
REQUEST_TIMEOUT_CODE = 408
TIMED_OUT_EXIT = -9


@dataclass
class ServerStatus:
    """How a server stands in this sandbox instance."""

    connected: bool = False
    failed: bool = False
    last_error: str = ""
    sync_time: datetime | None = None
    circuit: CircuitState = CircuitState.CLOSED


class McpServers:
    """See the module docstring."""

    def __init__(
        self,
        store: McpStore,
        catalog: list[ServerSpec],
        launch: LaunchConfig,
        *,
        loaded: datetime | None = None,
        policy: ServerPolicy | None = None,
    ) -> None:
        loaded = loaded or now()
        self.policy = policy or ServerPolicy()
        self.store = store
        self.catalog = {
            s.server_id: replace(s, tenant="", create_time=s.create_time or loaded) for s in catalog
        }
        self.launch = launch
        self._connections: dict[tuple[str, str], ServerConnection] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._status: dict[tuple[str, str], ServerStatus] = {}
        self._syncing: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._resync_wanted: set[tuple[str, str]] = set()
        self._background: set[asyncio.Task[Any]] = set()

    # Registrations -------------------------------------------------------------------------------------

    async def spec(self, tenant: str, server_id: str) -> ServerSpec:
        """The server `tenant` sees under `server_id`; NotFound otherwise."""
        spec = self.catalog.get(server_id)
        if spec is None and tenant:
            stored = await self.store.server(tenant, server_id)
            spec = None if stored is None else _from_stored(stored)
        if spec is None:
            raise NotFound(
                f"mcpServers/{server_id} not found",
                reason="MCP_SERVER_NOT_FOUND",
                metadata={"server": server_id},
            )
        return spec

    async def specs(self, tenant: str) -> list[ServerSpec]:
        """Every server `tenant` sees, in id order."""
        own = [_from_stored(s) for s in await self.store.servers(tenant)]
        merged = {**{s.server_id: s for s in own}, **self.catalog}
        return [merged[k] for k in sorted(merged)]

    async def register(self, tenant: str, spec: ServerSpec, *, prefix: str = "mcp_server.") -> ServerSpec:
        """Store an API registration and import its tools (a failure to connect is recorded, not raised).

        InvalidArgument lists what the policy refuses (fields under `prefix`); nothing is stored then."""
        if spec.server_id in self.catalog:
            raise AlreadyExists(
                f"{spec.name} is a catalog MCP server",
                reason="MCP_SERVER_EXISTS",
                metadata={"server": spec.server_id, "origin": "catalog"},
            )
        spec = replace(spec, tenant=tenant, origin=ORIGIN_API, create_time=now())
        refused = await self.policy.check(spec)
        if refused:
            raise InvalidArgument(
                "the MCP server asks for what the operator does not let API-registered servers use",
                violations=[(prefix + f, d) for f, d in refused],
            )
        stored = StoredServer(tenant, spec.server_id, spec_to_document(spec), spec.create_time or now())
        if not await self.store.insert_server(stored):
            raise AlreadyExists(
                f"{spec.name} already exists", reason="MCP_SERVER_EXISTS", metadata={"server": spec.server_id}
            )
        with contextlib.suppress(Unavailable):
            await self.sync(spec)
        return spec

    async def unregister(self, tenant: str, server_id: str) -> None:
        """Remove an API registration, its tools and its connection."""
        if server_id in self.catalog:
            raise InvalidArgument(
                f"mcpServers/{server_id} comes from the catalog and cannot be deleted",
                reason="CATALOG_MCP_SERVER",
                metadata={"server": server_id},
            )
        if not await self.store.delete_server(tenant, server_id):
            raise NotFound(
                f"mcpServers/{server_id} not found",
                reason="MCP_SERVER_NOT_FOUND",
                metadata={"server": server_id},
            )
        key = (tenant, server_id)
        connection = self._connections.pop(key, None)
        if connection is not None:
            await connection.close()
        self._breakers.pop(key, None)
        self._status.pop(key, None)

    def status(self, spec: ServerSpec) -> ServerStatus:
        """The server's connection and circuit state in this instance."""
        status = self._status.setdefault(spec.key, ServerStatus())
        status.circuit = self._breaker(spec).state
        connection = self._connections.get(spec.key)
        status.connected = connection is not None and connection.alive
        return status

    # Imported tools ------------------------------------------------------------------------------------

    async def tool(self, tenant: str, tool_id: str) -> ToolSpec | None:
        """The imported tool `tool_id` as `tenant` sees it, if any."""
        imported = await self.store.tool(tenant, tool_id)
        if imported is None:
            return None
        try:
            spec = await self.spec(imported.tenant, imported.server_id)
        except NotFound:
            return None
        return _tool_spec(imported, spec)

    async def tools(self, tenant: str) -> list[ToolSpec]:
        """Every imported tool `tenant` sees, in id order."""
        specs = {s.key: s for s in await self.specs(tenant)}
        found = []
        for imported in await self.store.visible_tools(tenant):
            spec = specs.get((imported.tenant, imported.server_id))
            if spec is not None:
                found.append(_tool_spec(imported, spec))
        return found

    async def server_tools(self, spec: ServerSpec) -> list[str]:
        """Names of the tools imported from `spec`."""
        return [f"tools/{t.tool_id}" for t in await self.store.tools(spec.tenant, spec.server_id)]

    async def sync(self, spec: ServerSpec) -> list[ImportedTool]:
        """Import the server's tool list now; Unavailable when it cannot be reached."""
        try:
            listed = await self._with_retries(spec, _list_all, LIST_TIMEOUT)
        except (ConnectionLost, TimeoutError, McpError) as exc:
            self._fail(spec, f"import failed: {exc}")
            raise Unavailable(
                f"{spec.name}: cannot import its tools: {exc}",
                reason="MCP_SERVER_UNAVAILABLE",
                metadata={"server": spec.server_id},
            ) from exc
        known = {t.remote_name: t.tool_id for t in await self.store.tools(spec.tenant, spec.server_id)}
        ids = naming.assign_tool_ids(spec.server_id, [t.name for t in listed], known)
        stamp = now()
        imported = [
            ImportedTool(
                tenant=spec.tenant,
                tool_id=ids[t.name],
                server_id=spec.server_id,
                remote_name=t.name,
                description=t.description or t.title or t.name,
                input_schema=dict(t.inputSchema or {"type": "object"}),
                sync_time=stamp,
            )
            for t in listed
        ]
        await self.store.replace_tools(spec.tenant, spec.server_id, imported)
        status = self._status.setdefault(spec.key, ServerStatus())
        status.sync_time, status.failed, status.last_error = stamp, False, ""
        log.info(
            "imported mcp tools",
            extra={
                "fields": {"server": spec.server_id, "tenant": spec.tenant, "tools": sorted(ids.values())}
            },
        )
        return imported

    # Calls ---------------------------------------------------------------------------------------------

    async def execute(self, tool: ToolSpec, arguments: Mapping[str, Any]) -> AsyncGenerator[Event, None]:
        """Call an imported tool: progress messages as stderr chunks while it runs, its content as output
        chunks, then the Result (see the module docstring for failures)."""
        binding = tool.mcp
        if binding is None:
            raise InvalidArgument(f"{tool.name} is not an MCP tool")
        spec = await self.spec(binding.tenant, binding.server_id)
        breaker = self._breaker(spec)
        if not breaker.allow():
            wait = breaker.retry_after()
            raise Unavailable(
                f"{spec.name} is failing; its circuit is open for another {wait:.1f}s",
                reason="MCP_CIRCUIT_OPEN",
                metadata={"server": spec.server_id, "retry_after_seconds": f"{wait:.1f}"},
            )
        notes: asyncio.Queue[str] = asyncio.Queue()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            notes.put_nowait(message or (f"{progress:g}/{total:g}" if total else f"{progress:g}"))

        async def call(session: ClientSession) -> types.CallToolResult:
            return await session.call_tool(
                binding.remote_name,
                dict(arguments),
                read_timeout_seconds=timedelta(seconds=spec.timeout_seconds),
                progress_callback=on_progress,
            )

        started = time.monotonic()
        task = asyncio.ensure_future(self._with_retries(spec, call, spec.timeout_seconds))
        seq = 0
        try:
            while not task.done():
                getter = asyncio.ensure_future(notes.get())
                await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    seq += 1
                    yield Chunk(seq=seq, stream=Stream.STDERR, data=(getter.result() + "\n").encode())
                else:
                    getter.cancel()
            result = task.result()
        except (ConnectionLost, TimeoutError, McpError) as exc:
            for event in self._failed_call(spec, breaker, exc, time.monotonic() - started):
                yield event
            return
        except BaseException:
            breaker.abandon()
            raise
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        breaker.success()
        for event in result_events(result, seq + 1, time.monotonic() - started):
            yield event

    def _failed_call(
        self, spec: ServerSpec, breaker: CircuitBreaker, exc: BaseException, wall: float
    ) -> list[Event]:
        if isinstance(exc, McpError) and exc.error.code != REQUEST_TIMEOUT_CODE:
            breaker.success()  # the server answered, with an error
            message = f"MCP error {exc.error.code}: {exc.error.message}"
            return [Result(exit_code=1, stderr=message, usage=Usage(wall_seconds=wall))]
        breaker.failure()
        if isinstance(exc, ConnectionLost):
            self._fail(spec, str(exc))
            raise Unavailable(
                f"{spec.name} is unavailable: {exc}",
                reason="MCP_SERVER_UNAVAILABLE",
                metadata={"server": spec.server_id, "circuit": breaker.state.value},
            ) from exc
        note = f"{spec.name} did not answer within {spec.timeout_seconds:g}s"
        return [Result(exit_code=TIMED_OUT_EXIT, timed_out=True, stderr=note, usage=Usage(wall_seconds=wall))]

    # Connections ---------------------------------------------------------------------------------------

    async def _with_retries(
        self, spec: ServerSpec, call: Callable[[ClientSession], Awaitable[T]], timeout: float
    ) -> T:
        for attempt in range(1, spec.retry.max_attempts + 1):
            try:
                connection = await self._connection(spec)
                return await connection.request(call, timeout)
            except ConnectionLost as exc:
                if exc.delivered or isinstance(exc, Refused) or attempt >= spec.retry.max_attempts:
                    raise
                await asyncio.sleep(spec.retry.backoff(attempt))
        raise AssertionError("unreachable")

    async def _connection(self, spec: ServerSpec) -> ServerConnection:
        lock = self._locks.setdefault(spec.key, asyncio.Lock())
        async with lock:
            connection = self._connections.get(spec.key)
            if connection is not None and connection.alive and connection.spec == spec:
                return connection
            reconnect = connection is not None
            if connection is not None:
                self._connections.pop(spec.key, None)
                await connection.close()
            refused = await self.policy.check(spec)
            if refused:
                message = "; ".join(f"{f}: {d}" for f, d in refused)
                self._fail(spec, f"refused by the operator's policy: {message}")
                raise Refused(f"refused by the operator's policy: {message}")
            connection = ServerConnection(spec, self.launch, lambda: self._tools_changed(spec), self.policy)
            try:
                await connection.open(min(spec.timeout_seconds, CONNECT_TIMEOUT))
            except ConnectionLost as exc:
                self._fail(spec, str(exc))
                raise
            self._connections[spec.key] = connection
            status = self._status.setdefault(spec.key, ServerStatus())
            status.failed, status.last_error = False, ""
            if reconnect:  # its tool list may have changed while we were away
                self._tools_changed(spec)
            return connection

    def _tools_changed(self, spec: ServerSpec) -> None:
        """Re-import soon; one import at a time per server, another one after it if asked meanwhile."""
        if spec.key in self._syncing:
            self._resync_wanted.add(spec.key)
            return
        task = asyncio.get_running_loop().create_task(self._resync(spec))
        self._syncing[spec.key] = task

    async def _resync(self, spec: ServerSpec) -> None:
        try:
            while True:
                self._resync_wanted.discard(spec.key)
                with contextlib.suppress(Unavailable):
                    await self.sync(spec)
                if spec.key not in self._resync_wanted:
                    return
        except Exception:
            log.exception("mcp re-import failed", extra={"fields": {"server": spec.server_id}})
        finally:
            self._syncing.pop(spec.key, None)

    def _breaker(self, spec: ServerSpec) -> CircuitBreaker:
        breaker = self._breakers.get(spec.key)
        if breaker is None or breaker.config != spec.breaker:
            breaker = self._breakers[spec.key] = CircuitBreaker(spec.breaker)
        return breaker

    def _fail(self, spec: ServerSpec, error: str) -> None:
        status = self._status.setdefault(spec.key, ServerStatus())
        status.failed, status.last_error = True, error[:1000]

    # Lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Import every catalog and registered server's tools in the background (a server that is down does
        not hold up the start; its tools keep their last imported list)."""

        async def import_all() -> None:
            specs = list(self.catalog.values())
            specs += [_from_stored(s) for s in await self.store.servers()]
            await asyncio.gather(*(self._import_quietly(s) for s in specs))

        task = asyncio.get_running_loop().create_task(import_all(), name="mcp-import")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _import_quietly(self, spec: ServerSpec) -> None:
        with contextlib.suppress(Unavailable):
            await self.sync(spec)

    async def close(self) -> None:
        """Close every connection (stopping stdio server processes)."""
        for task in [*self._background, *self._syncing.values()]:
            task.cancel()
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)


class Refused(ConnectionLost):
    """The server may not be connected (the policy refuses what it asks for); nothing was sent, and trying
    again would not help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, delivered=False)


async def _list_all(session: ClientSession) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.nextCursor
        if not cursor:
            return tools


def _from_stored(stored: StoredServer) -> ServerSpec:
    spec = spec_from_document(stored.document, stored.server_id)
    return replace(spec, tenant=stored.tenant, origin=ORIGIN_API, create_time=stored.create_time)


def _tool_spec(imported: ImportedTool, spec: ServerSpec) -> ToolSpec:
    return ToolSpec(
        tool_id=imported.tool_id,
        description=imported.description,
        input_schema=imported.input_schema,
        process=ProcessSpec(command=()),
        limits=Limits(wall_time_seconds=spec.timeout_seconds),
        origin=ORIGIN_MCP,
        create_time=imported.sync_time,
        mcp=McpBinding(
            tenant=imported.tenant, server_id=imported.server_id, remote_name=imported.remote_name
        ),
        access=spec.access,
    )
