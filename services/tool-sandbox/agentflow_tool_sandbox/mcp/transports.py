"""Transports to an MCP server, as the SDK's ClientSession wants them: a stream of incoming messages and a
stream for outgoing ones. stdio frames JSON-RPC as lines over a process launched by `stdio_launch`;
streamable HTTP is the SDK's own client.

Defence in depth, whatever was checked before: an `AF_*` variable is never read into a header nor passed to a
process; an API-registered server's HTTP connections go through `destinations.GuardedTransport` (public
addresses only, unless allowed) and its stdio process may read only delegated directories.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from agentflow_tool_sandbox.mcp import stdio_launch
from agentflow_tool_sandbox.mcp.destinations import GuardedTransport
from agentflow_tool_sandbox.mcp.model import HttpTransport, ServerSpec, StdioTransport
from agentflow_tool_sandbox.mcp.policy import ServerPolicy
from agentflow_tool_sandbox.validation import RESERVED_ENV_PREFIX

log = logging.getLogger("agentflow.tool_sandbox.mcp")

ReadStream = MemoryObjectReceiveStream[SessionMessage | Exception]
WriteStream = MemoryObjectSendStream[SessionMessage]
HTTP_CONNECT_TIMEOUT = 10.0
HTTP_READ_TIMEOUT = 300.0


@dataclass(frozen=True)
class Streams:
    """An open transport: what the session reads and writes, and an event set when the transport ended."""

    read: ReadStream
    write: WriteStream
    ended: anyio.Event


class ReservedVariable(Exception):
    """A registration names an `AF_*` variable of the service: nothing is connected."""


@asynccontextmanager
async def open_transport(
    spec: ServerSpec, launch: stdio_launch.LaunchConfig, policy: ServerPolicy
) -> AsyncIterator[Streams]:
    """Connect to `spec`'s server with its transport; everything is closed (the process stopped) on exit.
    `policy` restricts API-registered servers (see the module docstring)."""
    restricted = policy.applies(spec)
    if isinstance(spec.transport, StdioTransport):
        readable = policy.script_path_problem if restricted else None
        async with _stdio(spec.server_id, spec.transport, launch, readable) as streams:
            yield streams
    else:
        async with _http(spec.transport, policy if restricted else None) as streams:
            yield streams


def _service_variable(name: str) -> str | None:
    """The service's variable `name`, never an `AF_*` one (ReservedVariable)."""
    if name.upper().startswith(RESERVED_ENV_PREFIX):
        raise ReservedVariable(f"`{name}`: `{RESERVED_ENV_PREFIX}*` variables are never passed to a server")
    return os.environ.get(name)


@asynccontextmanager
async def _http(transport: HttpTransport, policy: ServerPolicy | None) -> AsyncIterator[Streams]:
    headers = dict(transport.headers)
    for header, variable in transport.headers_from_env.items():
        value = _service_variable(variable)
        if value is not None:
            headers[header] = value
    timeout = httpx.Timeout(HTTP_CONNECT_TIMEOUT, read=HTTP_READ_TIMEOUT)
    guarded = None if policy is None else GuardedTransport(policy.allowed_hosts)
    async with (
        httpx.AsyncClient(
            headers=headers, timeout=timeout, transport=guarded, trust_env=guarded is None
        ) as client,
        streamable_http_client(transport.url, http_client=client) as (read, write, _),
    ):
        yield Streams(read, write, anyio.Event())


@asynccontextmanager
async def _stdio(
    server_id: str,
    transport: StdioTransport,
    launch: stdio_launch.LaunchConfig,
    readable: stdio_launch.ReadableCheck | None,
) -> AsyncIterator[Streams]:
    env = dict(transport.env)
    for variable in transport.pass_env:
        value = _service_variable(variable)
        if value is not None:
            env[variable] = value
    server = await stdio_launch.launch(launch, transport.command, env, readable=readable)
    read_writer, read = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    ended = anyio.Event()

    async def stdout_reader() -> None:
        try:
            async with read_writer:
                while line := await server.stdout.readline():
                    text = line.decode("utf-8", "replace").strip()
                    if not text:
                        continue
                    try:
                        message = types.JSONRPCMessage.model_validate_json(text)
                    except Exception as exc:
                        await read_writer.send(exc)
                        continue
                    await read_writer.send(SessionMessage(message))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            ended.set()

    async def stdin_writer() -> None:
        with contextlib.suppress(anyio.ClosedResourceError, BrokenPipeError, ConnectionResetError):
            async with write_reader:
                async for message in write_reader:
                    data = message.message.model_dump_json(by_alias=True, exclude_none=True)
                    server.stdin.write(data.encode() + b"\n")
                    await server.stdin.drain()

    async def stderr_logger() -> None:
        while line := await server.stderr.readline():
            log.info(
                "mcp server stderr",
                extra={"fields": {"server": server_id, "line": line.decode("utf-8", "replace").rstrip()}},
            )

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stdout_reader)
            tg.start_soon(stdin_writer)
            tg.start_soon(stderr_logger)
            try:
                yield Streams(read, write, ended)
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await server.stop()
