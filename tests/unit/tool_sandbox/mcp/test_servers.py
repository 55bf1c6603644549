"""McpServers against real SDK servers: import, stable names, calls, list_changed, retries and the breaker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable
from typing import Any

import pytest
from agentflow_runtime.breaker import BreakerConfig, CircuitState
from agentflow_runtime.errors import Unavailable
from agentflow_tool_sandbox.events import Chunk, Event, Result
from agentflow_tool_sandbox.mcp.model import HttpTransport, RetryPolicy, ServerSpec, StdioTransport
from agentflow_tool_sandbox.mcp.servers import McpServers
from agentflow_tool_sandbox.spec import ToolAccess

from tests.mcp_servers.running import HttpDemoServer, stdio_command

WAIT = 60.0


def stdio_spec(server_id: str = "local") -> ServerSpec:
    return ServerSpec(server_id=server_id, transport=StdioTransport(command=tuple(stdio_command())))


def http_spec(server: HttpDemoServer, server_id: str = "remote", **overrides: Any) -> ServerSpec:
    return ServerSpec(server_id=server_id, transport=HttpTransport(url=server.url), **overrides)


async def collect(events: AsyncIterable[Event]) -> tuple[list[Chunk], Result]:
    chunks: list[Chunk] = []
    results: list[Result] = []
    async for event in events:
        (chunks if isinstance(event, Chunk) else results).append(event)  # type: ignore[arg-type]
    assert len(results) == 1
    return chunks, results[0]


async def call(
    servers: McpServers, tenant: str, tool_id: str, **arguments: Any
) -> tuple[list[Chunk], Result]:
    tool = await servers.tool(tenant, tool_id)
    assert tool is not None, tool_id
    return await asyncio.wait_for(collect(servers.execute(tool, arguments)), WAIT)


async def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_stdio_server_tools_are_imported_and_called(servers: McpServers) -> None:
    spec = await servers.register("acme", stdio_spec())
    ids = [t.tool_id for t in await servers.tools("acme")]
    assert ids == ["local--add", "local--echo", "local--fail", "local--grow-tools", "local--shout"]
    tool = await servers.tool("acme", "local--add")
    assert tool is not None and tool.mcp is not None
    assert tool.mcp.remote_name == "add" and tool.origin == "mcp"
    assert tool.input_schema["required"] == ["a", "b"]
    assert tool.access == ToolAccess()  # nothing granted by default
    _, result = await call(servers, "acme", "local--add", a=2, b=3)
    assert result.exit_code == 0 and result.output == {"sum": 5}
    chunks, shouted = await call(servers, "acme", "local--shout", text="hi")
    assert shouted.output == {"result": "HI"}
    assert b"half way" in b"".join(c.data for c in chunks)
    _, failed = await call(servers, "acme", "local--fail", reason="x")
    assert failed.exit_code == 1 and "failed on purpose: x" in failed.stderr
    assert servers.status(spec).connected
    assert await servers.tools("other") == []  # another tenant sees nothing


async def test_names_stay_stable_when_a_second_server_is_added(
    servers: McpServers, http_server: HttpDemoServer
) -> None:
    await servers.register("acme", stdio_spec("alpha"))
    first = [t.tool_id for t in await servers.tools("acme")]
    await servers.register("acme", http_spec(http_server, "beta"))
    both = [t.tool_id for t in await servers.tools("acme")]
    assert [t for t in both if t.startswith("alpha--")] == first
    assert "beta--echo" in both
    _, alpha = await call(servers, "acme", "alpha--echo", text="x")
    _, beta = await call(servers, "acme", "beta--echo", text="x")
    assert alpha.output == {"result": "stdio-demo: x"}
    assert beta.output == {"result": "http-demo: x"}


async def test_list_changed_reimports(servers: McpServers, http_server: HttpDemoServer) -> None:
    await servers.register("acme", http_spec(http_server))
    assert await servers.tool("acme", "remote--late-tool") is None
    _, grown = await call(servers, "acme", "remote--grow-tools")
    assert grown.output == {"result": "grown"}

    async def imported() -> bool:
        return await servers.tool("acme", "remote--late-tool") is not None

    await until(imported, "the re-import after tools/list_changed")
    _, late = await call(servers, "acme", "remote--late-tool", x=4)
    assert late.output == {"result": 40}


async def test_killed_server_opens_the_breaker_and_a_restart_closes_it(
    servers: McpServers, http_server: HttpDemoServer
) -> None:
    spec = await servers.register(
        "acme",
        http_spec(
            http_server,
            retry=RetryPolicy(max_attempts=2, initial_backoff_seconds=0.05),
            breaker=BreakerConfig(failure_threshold=2, open_seconds=1.0),
        ),
    )
    _, ok = await call(servers, "acme", "remote--add", a=1, b=1)
    assert ok.output == {"sum": 2}
    http_server.kill()
    for _ in range(2):
        with pytest.raises(Unavailable) as unavailable:
            await call(servers, "acme", "remote--add", a=1, b=1)
        assert unavailable.value.reason == "MCP_SERVER_UNAVAILABLE"
    assert servers.status(spec).circuit is CircuitState.OPEN
    with pytest.raises(Unavailable) as open_circuit:
        await call(servers, "acme", "remote--add", a=1, b=1)
    assert open_circuit.value.reason == "MCP_CIRCUIT_OPEN"
    http_server.start()

    async def half_open() -> bool:
        return servers.status(spec).circuit is CircuitState.HALF_OPEN

    await until(half_open, "the circuit to half-open")
    _, recovered = await call(servers, "acme", "remote--add", a=2, b=2)
    assert recovered.output == {"sum": 4}
    assert servers.status(spec).circuit is CircuitState.CLOSED
