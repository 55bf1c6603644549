"""McpBridgeService.Exchange over the real ToolServicer (registry from the repo catalog, real processes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agentflow.tools.v1 import mcp_pb2
from agentflow_runtime import context
from agentflow_tool_sandbox.catalog import load_catalog
from agentflow_tool_sandbox.executions import Executions
from agentflow_tool_sandbox.executor import ProcessRunner
from agentflow_tool_sandbox.mcp.bridge_servicer import McpBridgeServicer
from agentflow_tool_sandbox.registry import Registry
from agentflow_tool_sandbox.servicer import ToolServicer
from agentflow_tool_sandbox.store import ExecutionStore, ToolStore
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.unit.tool_sandbox.test_servicer import FakeAudit

REPO_CATALOG = Path(__file__).resolve().parents[4] / "catalog" / "tools"
CTX: Any = None


@pytest.fixture
def audit() -> FakeAudit:
    return FakeAudit()


@pytest.fixture
def bridge(runner: ProcessRunner, engine: AsyncEngine, audit: FakeAudit) -> McpBridgeServicer:
    registry = Registry(ToolStore(engine), load_catalog(REPO_CATALOG))
    tools = ToolServicer(registry, Executions(runner, ExecutionStore(engine)), audit)  # type: ignore[arg-type]
    return McpBridgeServicer(registry, tools.ExecuteTool)


class Frames:
    """The gateway's side of one exchange: frames to send (a queue), frames received."""

    def __init__(self) -> None:
        self.outgoing: asyncio.Queue[str | None] = asyncio.Queue()

    def send(self, message: dict[str, Any] | str) -> None:
        self.outgoing.put_nowait(message if isinstance(message, str) else json.dumps(message))

    async def requests(self) -> AsyncIterator[mcp_pb2.ExchangeRequest]:
        while (text := await self.outgoing.get()) is not None:
            yield mcp_pb2.ExchangeRequest(json_rpc=text)


async def exchange(
    bridge: McpBridgeServicer, message: dict[str, Any] | str, role: str = "developer", tenant: str = "acme"
) -> list[dict[str, Any]]:
    frames = Frames()
    frames.send(message)
    with context.bound(context.CallContext(tenant=tenant, principal="dora", role=role)):
        return [json.loads(r.json_rpc) async for r in bridge.Exchange(frames.requests(), CTX)]


def call(name: str, arguments: dict[str, Any], rid: int = 1) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


async def test_list_shows_what_the_callers_role_may_use(bridge: McpBridgeServicer) -> None:
    request = {"jsonrpc": "2.0", "id": 4, "method": "tools/list"}
    (reply,) = await exchange(bridge, request)
    tools = {t["name"]: t for t in reply["result"]["tools"]}
    assert reply["id"] == 4 and {"word-count", "ticker"} <= set(tools)
    assert tools["word-count"]["inputSchema"]["required"] == ["text"]
    assert tools["word-count"]["description"].startswith("Counts the words")
    (viewer,) = await exchange(bridge, request, role="viewer")
    assert viewer["result"]["tools"] == []


async def test_call_streams_output_then_the_result_and_audits(
    bridge: McpBridgeServicer, audit: FakeAudit
) -> None:
    frames = await exchange(bridge, call("word-count", {"text": "to be or not"}, rid=9))
    logs, result = frames[:-1], frames[-1]
    assert logs and all(f["method"] == "notifications/message" for f in logs)
    assert json.loads("".join(f["params"]["data"] for f in logs)) == {"words": 4, "chars": 12}
    assert {f["params"]["logger"] for f in logs} == {"stdout"}
    assert result["id"] == 9
    assert result["result"]["isError"] is False
    assert result["result"]["structuredContent"] == {"words": 4, "chars": 12}
    assert json.loads(result["result"]["content"][0]["text"]) == {"words": 4, "chars": 12}
    assert [(a, r, o) for a, r, o, _ in audit.events] == [("tool.execute", "tools/word-count", "ok")]


async def test_forbidden_and_unknown_tools_answer_alike(bridge: McpBridgeServicer, audit: FakeAudit) -> None:
    (forbidden,) = await exchange(bridge, call("word-count", {"text": "x"}), role="viewer")
    (unknown,) = await exchange(bridge, call("no-such-tool", {}))
    (malformed,) = await exchange(bridge, call("Not A Name", {}))
    assert forbidden["error"] == {"code": -32602, "message": "Unknown tool: word-count"}
    assert unknown["error"] == {"code": -32602, "message": "Unknown tool: no-such-tool"}
    assert malformed["error"] == {"code": -32602, "message": "Unknown tool: Not A Name"}
    assert [(r, o) for _, r, o, _ in audit.events] == [("tools/word-count", "denied")]


async def test_bad_arguments_and_bad_requests(bridge: McpBridgeServicer) -> None:
    (bad,) = await exchange(bridge, call("word-count", {"text": 5}))
    assert bad["error"] == {
        "code": -32602,
        "message": "Invalid arguments: arguments.text: must be of type string",
    }
    (not_json,) = await exchange(bridge, "{nope")
    assert not_json["error"]["code"] == -32600
    (not_object,) = await exchange(bridge, "[1]")
    assert not_object["error"]["code"] == -32600
    (other,) = await exchange(bridge, {"jsonrpc": "2.0", "id": 2, "method": "resources/list"})
    assert other["error"]["code"] == -32601 and other["id"] == 2


async def test_a_relayed_cancel_stops_the_tool(bridge: McpBridgeServicer, audit: FakeAudit) -> None:
    frames = Frames()
    frames.send(call("ticker", {"count": 1000, "interval": 0.05}, rid=3))
    received: list[dict[str, Any]] = []
    with context.bound(context.CallContext(tenant="acme", principal="dora", role="developer")):
        async for reply in bridge.Exchange(frames.requests(), CTX):
            received.append(json.loads(reply.json_rpc))
            if len(received) == 1:
                assert received[0]["params"]["data"] == "tick 1\n"
                frames.send(
                    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}
                )
    assert received[-1] == {"jsonrpc": "2.0", "id": 3, "error": {"code": -32600, "message": "cancelled"}}
    assert [(r, o) for _, r, o, _ in audit.events] == [("tools/ticker", "cancelled")]
