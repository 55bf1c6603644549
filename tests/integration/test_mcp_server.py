"""The gateway's MCP endpoint, driven by the official `mcp` SDK client over streamable HTTP.

A real mesh (every service its own process, mTLS between them): the client talks to the gateway's `/mcp`
with a JWT, the gateway relays over the McpBridge stream to the tool-sandbox, which lists and executes the
tools the caller's tenant and role may use. Imported tools come from a real MCP server written with the SDK.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from agentflow_cli.tokens import dev_token
from agentflow_runtime.settings import Settings
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from tests.integration.test_mcp_client import audit_events, register
from tests.mcp_servers.running import HttpDemoServer
from tests.support import auth

GRANT = {"roles": ["developer", "admin"]}
RUN_TOOLS = {"agentflow_start_run", "agentflow_get_run", "agentflow_watch_run"}


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


@asynccontextmanager
async def connect(
    edge: str, token: str, logs: list[types.LoggingMessageNotificationParams] | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized MCP session with the gateway, as the bearer of `token`."""

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        if logs is not None:
            logs.append(params)

    async with (
        httpx.AsyncClient(headers=auth(token), timeout=httpx.Timeout(60, read=120)) as client,
        streamable_http_client(f"{edge}/mcp", http_client=client) as (read, write, _),
        ClientSession(read, write, logging_callback=on_log) as session,
    ):
        await session.initialize()
        yield session


async def names(session: ClientSession) -> set[str]:
    return {tool.name for tool in (await session.list_tools()).tools}


def text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpDemoServer]:
    server = HttpDemoServer(name="mcp-edge-demo")
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def servers(edge: str, token: str, http_server: HttpDemoServer) -> tuple[str, str]:
    """The demo server registered twice in tenant acme: granted to developers, and granted to nobody."""
    granted, ungranted = unique("granted"), unique("ungranted")
    register(edge, token, granted, {"http": {"url": http_server.url}, "access": GRANT})
    register(edge, token, ungranted, {"http": {"url": http_server.url}})
    return granted, ungranted


async def test_lists_only_permitted_tools_and_calls_them(
    edge: str, settings: Settings, servers: tuple[str, str]
) -> None:
    granted, ungranted = servers
    developer = dev_token(settings, subject="dora", tenant="acme", role="developer")
    logs: list[types.LoggingMessageNotificationParams] = []
    async with connect(edge, developer, logs) as session:
        listed = await names(session)
        assert {"word-count", "ticker", f"{granted}--echo", f"{granted}--add"} <= listed
        assert listed >= RUN_TOOLS
        assert not [name for name in listed if name.startswith(ungranted)], listed
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert tools["word-count"].inputSchema["required"] == ["text"]

        counted = await session.call_tool("word-count", {"text": "one two three"})
        assert not counted.isError, counted
        assert counted.structuredContent is not None and counted.structuredContent["words"] == 3

        echoed = await session.call_tool(f"{granted}--echo", {"text": "hi"})
        assert not echoed.isError, echoed  # FastMCP's structured form of a plain return value
        assert echoed.structuredContent == {"result": "mcp-edge-demo: hi"}

        failed = await session.call_tool(f"{granted}--fail", {"reason": "because"})
        assert failed.isError and "failed on purpose: because" in text(failed)

        ticks = await session.call_tool("ticker", {"count": 3, "interval": 0.05})
        assert not ticks.isError, ticks
    streamed = "".join(str(log.data) for log in logs if log.logger == "stdout")
    assert "tick 1" in streamed and "tick 3" in streamed, logs
    audited = audit_events(edge, dev_token(settings, tenant="acme"), f"tools/{granted}--echo", 1)
    assert any(e["outcome"] == "ok" and e["action"] == "tool.execute" for e in audited), audited


async def test_a_tool_the_caller_may_not_use_answers_like_an_unknown_one(
    edge: str, settings: Settings, servers: tuple[str, str]
) -> None:
    _, ungranted = servers
    developer = dev_token(settings, subject="dora", tenant="acme", role="developer")
    async with connect(edge, developer) as session:
        with pytest.raises(McpError) as forbidden:
            await session.call_tool(f"{ungranted}--add", {"a": 1, "b": 2})
        with pytest.raises(McpError) as unknown:
            await session.call_tool("no-such-tool", {})
    assert forbidden.value.error.code == unknown.value.error.code == types.INVALID_PARAMS
    assert forbidden.value.error.message == f"Unknown tool: {ungranted}--add"
    assert unknown.value.error.message == "Unknown tool: no-such-tool"
    denied = audit_events(edge, dev_token(settings, tenant="acme"), f"tools/{ungranted}--add", 1)
    assert [e["outcome"] for e in denied] == ["denied"]


async def test_a_viewer_sees_and_calls_only_what_its_role_allows(edge: str, settings: Settings) -> None:
    viewer = dev_token(settings, subject="vic", tenant="acme", role="viewer")
    async with connect(edge, viewer) as session:
        assert await names(session) == {"agentflow_get_run", "agentflow_watch_run"}
        for tool, arguments in (("word-count", {"text": "x"}), ("agentflow_start_run", {"workflow": "demo"})):
            with pytest.raises(McpError) as refused:
                await session.call_tool(tool, arguments)
            assert refused.value.error.message == f"Unknown tool: {tool}"


async def test_another_tenant_sees_its_own_set(
    edge: str, settings: Settings, servers: tuple[str, str]
) -> None:
    granted, _ = servers
    other = dev_token(settings, subject="gus", tenant="globex", role="developer")
    async with connect(edge, other) as session:
        listed = await names(session)
        assert "word-count" in listed
        assert not [name for name in listed if "--" in name], listed  # acme's imported tools are acme's
        with pytest.raises(McpError) as refused:
            await session.call_tool(f"{granted}--echo", {"text": "hi"})
        assert refused.value.error.message == f"Unknown tool: {granted}--echo"


async def test_requests_need_a_valid_token_and_sessions_belong_to_their_user(
    edge: str, settings: Settings
) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": types.LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(timeout=60) as client:
        missing = await client.post(f"{edge}/mcp", json=initialize, headers=accept)
        assert missing.status_code == 401, missing.text
        assert missing.headers["www-authenticate"].startswith("Bearer")
        forged = await client.post(f"{edge}/mcp", json=initialize, headers={**accept, **auth("not-a-jwt")})
        assert forged.status_code == 401
        assert forged.json()["details"][0]["reason"] == "TOKEN_INVALID"

        owner = auth(dev_token(settings, subject="dora", tenant="acme", role="developer"))
        opened = await client.post(f"{edge}/mcp", json=initialize, headers={**accept, **owner})
        assert opened.status_code == 200, opened.text
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-06-18"}
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        intruder = auth(dev_token(settings, subject="eve", tenant="globex", role="admin"))
        stolen = await client.post(f"{edge}/mcp", json=listing, headers={**accept, **session, **intruder})
        assert stolen.status_code == 404, stolen.text
        ended = await client.delete(f"{edge}/mcp", headers={**session, **owner})
        assert ended.status_code == 200, ended.text
        gone = await client.post(f"{edge}/mcp", json=listing, headers={**accept, **session, **owner})
        assert gone.status_code == 404


async def test_runs_start_and_are_watched_to_the_end(edge: str, settings: Settings) -> None:
    developer = dev_token(settings, subject="dora", tenant="acme", role="developer")
    workflow = unique("mcp-run-")
    source = (
        f"id: {workflow}\nsteps:\n  - id: count\n    kind: tool\n    tool: word-count\n"
        "    arguments: {text: '{{ input.text }}'}\noutput:\n  words: '{{ steps.count.output.words }}'\n"
    )
    async with httpx.AsyncClient(timeout=60) as client:
        created = await client.post(f"{edge}/v1/workflows", headers=auth(developer), json={"source": source})
        assert created.status_code == 200, created.text
    logs: list[types.LoggingMessageNotificationParams] = []
    steps: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append((progress, message))

    async with connect(edge, developer, logs) as session:
        started = await session.call_tool(
            "agentflow_start_run", {"workflow": workflow, "input": {"text": "to be or not"}}
        )
        assert not started.isError, started
        run: dict[str, Any] = started.structuredContent or {}
        assert run["name"].startswith("runs/")
        watched = await session.call_tool(
            "agentflow_watch_run", {"run": run["name"]}, progress_callback=on_progress
        )
        assert not watched.isError, watched
        finished = watched.structuredContent or {}
        assert finished["state"] == "RUN_STATE_SUCCEEDED", finished
        assert str(finished["output"]["words"]) == "4"
        got = await session.call_tool("agentflow_get_run", {"run": run["name"].removeprefix("runs/")})
        assert (got.structuredContent or {})["state"] == "RUN_STATE_SUCCEEDED"
        missing = await session.call_tool("agentflow_get_run", {"run": "runs/nope"})
        assert missing.isError and "NOT_FOUND" in text(missing)
    events = [log.data for log in logs if log.logger == "agentflow.run"]
    assert [e["type"] for e in events if isinstance(e, dict)][-1] == "RUN_EVENT_TYPE_RUN_SUCCEEDED", events
    assert steps and all(message for _, message in steps)


async def test_cancelling_a_call_stops_the_tool(edge: str, settings: Settings) -> None:
    """`notifications/cancelled` for a running tool call ends it in the sandbox (audited as cancelled)."""
    tenant = unique("cancel-")
    developer = auth(dev_token(settings, subject="dora", tenant=tenant, role="developer"))
    accept = {"Accept": "application/json, text/event-stream"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": types.LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=120)) as client:
        opened = await client.post(f"{edge}/mcp", json=initialize, headers={**accept, **developer})
        assert opened.status_code == 200, opened.text
        headers = {
            **accept,
            **developer,
            "Mcp-Session-Id": opened.headers["mcp-session-id"],
            "Mcp-Protocol-Version": types.LATEST_PROTOCOL_VERSION,
        }
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await client.post(f"{edge}/mcp", json=initialized, headers=headers)).status_code == 202
        call = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "ticker", "arguments": {"count": 1000, "interval": 0.2}},
        }
        frames: list[dict[str, Any]] = []
        async with client.stream("POST", f"{edge}/mcp", json=call, headers=headers) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for line in stream.aiter_lines():
                if not line.startswith("data:"):
                    continue
                frames.append(orjson.loads(line[5:]))
                if len(frames) == 1:  # the tool is running: its first line arrived
                    assert frames[0]["method"] == "notifications/message", frames
                    cancel = {
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": {"requestId": 7, "reason": "enough"},
                    }
                    sent = await client.post(f"{edge}/mcp", json=cancel, headers=headers)
                    assert sent.status_code == 202, sent.text
                if "id" in frames[-1]:
                    break
    assert frames[-1]["id"] == 7 and "error" in frames[-1], frames[-1]
    ticks = [f for f in frames if f.get("method") == "notifications/message"]
    assert len(ticks) < 1000
    admin = dev_token(settings, tenant=tenant, role="admin")
    deadline = time.monotonic() + 90
    while True:  # other tests run the ticker too; this tenant's call is the one (the sink sends in batches)
        mine = [e for e in audit_events(edge, admin, "tools/ticker", 1) if e["tenant"] == tenant]
        if mine or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert [(e["outcome"], e["principal"]) for e in mine] == [("cancelled", "dora")], mine
