"""The `/mcp` endpoint in process: the REST edge app with the MCP edge mounted, a fake McpBridgeService and
the fake RunService on a real grpc.aio server, JSON-RPC over HTTP as an MCP client sends it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import httpx
import pytest
from agentflow.runs.v1 import runs_pb2_grpc
from agentflow.tools.v1 import mcp_pb2, mcp_pb2_grpc
from agentflow_gateway.auth import Authenticator
from agentflow_gateway.backends import Backends
from agentflow_gateway.http import GatewayApp
from agentflow_gateway.mcp_bridge import McpBridge
from agentflow_gateway.mcp_edge import McpEdge
from agentflow_gateway.mcp_runs import RunTools
from agentflow_gateway.routes import RouteTable, build_methods
from mcp import types

from tests.unit.gateway.conftest import FakeRunService, OneChannel, bearer

ACCEPT = {"accept": "application/json, text/event-stream"}
WORD_COUNT = {
    "name": "word-count",
    "description": "Counts words.",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}


class FakeBridge(mcp_pb2_grpc.McpBridgeServiceServicer):
    """Answers like the tool-sandbox's bridge for one tool, `word-count`; `slow` runs until cancelled."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.slow_started = asyncio.Event()
        self.slow_cancelled = asyncio.Event()

    async def Exchange(
        self, request_iterator: AsyncIterator[mcp_pb2.ExchangeRequest], context: Any
    ) -> AsyncIterator[mcp_pb2.ExchangeResponse]:
        first = await anext(aiter(request_iterator))
        message = json.loads(first.json_rpc)
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.received.append((message, metadata))
        rid = message["id"]
        if message["method"] == "tools/list":
            yield _frame({"jsonrpc": "2.0", "id": rid, "result": {"tools": [WORD_COUNT]}})
            return
        name = message["params"]["name"]
        if name == "word-count":
            log = {"level": "info", "logger": "stdout", "data": "counting\n"}
            yield _frame({"jsonrpc": "2.0", "method": "notifications/message", "params": log})
            result = {
                "content": [{"type": "text", "text": '{"words": 2}'}],
                "structuredContent": {"words": 2},
            }
            yield _frame({"jsonrpc": "2.0", "id": rid, "result": {**result, "isError": False}})
        elif name == "slow":
            self.slow_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.slow_cancelled.set()
                raise
        else:
            error = {"code": types.INVALID_PARAMS, "message": f"Unknown tool: {name}"}
            yield _frame({"jsonrpc": "2.0", "id": rid, "error": error})


def _frame(message: dict[str, Any]) -> mcp_pb2.ExchangeResponse:
    return mcp_pb2.ExchangeResponse(json_rpc=json.dumps(message))


@pytest.fixture
async def mesh() -> AsyncIterator[tuple[FakeBridge, FakeRunService, OneChannel, grpc.aio.Server]]:
    server = grpc.aio.server()
    bridge, runs = FakeBridge(), FakeRunService()
    mcp_pb2_grpc.add_McpBridgeServiceServicer_to_server(bridge, server)
    runs_pb2_grpc.add_RunServiceServicer_to_server(runs, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield bridge, runs, OneChannel(channel), server
    await channel.close(None)
    await server.stop(None)


@pytest.fixture
async def edge(
    mesh: tuple[FakeBridge, FakeRunService, OneChannel, grpc.aio.Server],
    route_table: RouteTable,
    authenticator: Authenticator,
) -> AsyncIterator[httpx.AsyncClient]:
    channels = cast(Any, mesh[2])
    backends = Backends(channels)
    mcp = McpEdge(authenticator, McpBridge(channels), RunTools(backends, build_methods()))
    await mcp.start()
    app = GatewayApp(route_table, backends, authenticator, mcp=mcp)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as http:
        yield http
    await mcp.stop()


def messages(reply: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response: one JSON body, or the `data:` lines of an SSE stream."""
    if reply.headers["content-type"].startswith("application/json"):
        return [reply.json()]
    return [json.loads(line[5:]) for line in reply.text.splitlines() if line.startswith("data:")]


async def open_session(http: httpx.AsyncClient, role: str = "developer", **claims: Any) -> dict[str, str]:
    """Initialize a session as a caller with `role`; the headers of its later requests."""
    headers = {**ACCEPT, **bearer(role, **claims)}
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": types.LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "unit", "version": "0"},
        },
    }
    reply = await http.post("/mcp", json=initialize, headers=headers)
    assert reply.status_code == 200, reply.text
    result = messages(reply)[-1]["result"]
    assert result["serverInfo"]["name"] == "agentflow"
    assert "tools" in result["capabilities"] and "logging" in result["capabilities"]
    headers["mcp-session-id"] = reply.headers["mcp-session-id"]
    headers["mcp-protocol-version"] = types.LATEST_PROTOCOL_VERSION
    done = await http.post(
        "/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
    )
    assert done.status_code == 202
    return headers


async def rpc(
    http: httpx.AsyncClient, headers: dict[str, str], method: str, params: dict[str, Any], rid: int = 1
) -> list[dict[str, Any]]:
    payload = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
    reply = await http.post("/mcp", json=payload, headers=headers)
    assert reply.status_code == 200, reply.text
    return messages(reply)


async def test_no_or_bad_token_is_401_before_any_session(edge: httpx.AsyncClient) -> None:
    missing = await edge.post("/mcp", json={"jsonrpc": "2.0", "id": 0, "method": "ping"}, headers=ACCEPT)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="agentflow"'
    assert missing.json()["details"][0]["reason"] == "TOKEN_MISSING"
    expired = await edge.get("/mcp", headers={**ACCEPT, **bearer(exp_in=-10)})
    assert expired.status_code == 401
    assert expired.json()["details"][0]["reason"] == "TOKEN_EXPIRED"


async def test_list_relays_the_callers_identity_and_adds_the_run_tools_its_role_allows(
    edge: httpx.AsyncClient, mesh: tuple[FakeBridge, FakeRunService, OneChannel, grpc.aio.Server]
) -> None:
    bridge = mesh[0]
    developer = await open_session(edge, "developer", sub="dora", tenant="acme")
    listed = (await rpc(edge, developer, "tools/list", {}))[-1]["result"]["tools"]
    assert [t["name"] for t in listed] == [
        "word-count",
        "agentflow_start_run",
        "agentflow_get_run",
        "agentflow_watch_run",
    ]
    assert listed[0]["inputSchema"] == WORD_COUNT["inputSchema"]
    message, metadata = bridge.received[-1]
    assert message["method"] == "tools/list"
    assert (metadata["x-af-tenant"], metadata["x-af-principal"], metadata["x-af-role"]) == (
        "acme",
        "dora",
        "developer",
    )
    viewer = await open_session(edge, "viewer", sub="vic", tenant="globex")
    listed = (await rpc(edge, viewer, "tools/list", {}))[-1]["result"]["tools"]
    assert [t["name"] for t in listed] == ["word-count", "agentflow_get_run", "agentflow_watch_run"]
    assert bridge.received[-1][1]["x-af-role"] == "viewer"


async def test_call_streams_output_as_log_and_progress_then_the_result(edge: httpx.AsyncClient) -> None:
    session = await open_session(edge)
    params = {"name": "word-count", "arguments": {"text": "a b"}, "_meta": {"progressToken": "p1"}}
    frames = await rpc(edge, session, "tools/call", params, rid=5)
    log, progress, result = frames
    assert log["method"] == "notifications/message"
    assert log["params"] == {"level": "info", "logger": "stdout", "data": "counting\n"}
    assert progress["method"] == "notifications/progress"
    assert progress["params"]["progressToken"] == "p1" and progress["params"]["progress"] == 1
    assert result["id"] == 5
    assert result["result"]["structuredContent"] == {"words": 2}
    assert result["result"]["isError"] is False


async def test_the_bridges_errors_reach_the_client_as_json_rpc_errors(edge: httpx.AsyncClient) -> None:
    viewer = await open_session(edge, "viewer")
    for name in ("nope", "agentflow_start_run"):  # unknown, and a run tool the role does not allow
        frames = await rpc(edge, viewer, "tools/call", {"name": name, "arguments": {}})
        assert frames[-1]["error"] == {"code": types.INVALID_PARAMS, "message": f"Unknown tool: {name}"}


async def test_start_get_and_watch_runs_call_the_run_service_as_the_caller(
    edge: httpx.AsyncClient, mesh: tuple[FakeBridge, FakeRunService, OneChannel, grpc.aio.Server]
) -> None:
    runs = mesh[1]
    session = await open_session(edge, "developer", sub="dora", tenant="acme")
    arguments = {"workflow": "w1", "input": {"n": 1}, "request_id": "k1"}
    started = await rpc(edge, session, "tools/call", {"name": "agentflow_start_run", "arguments": arguments})
    run = started[-1]["result"]["structuredContent"]
    assert run["name"] == "runs/r1" and run["workflow"] == "workflows/w1" and run["input"] == {"n": 1}
    assert runs.requests[-1].request_id == "k1"
    assert runs.metadata[-1]["x-af-tenant"] == "acme" and runs.metadata[-1]["x-af-role"] == "developer"

    missing = await rpc(edge, session, "tools/call", {"name": "agentflow_get_run", "arguments": {"run": "x"}})
    assert missing[-1]["result"]["isError"] is True
    assert "NOT_FOUND RUN_NOT_FOUND" in missing[-1]["result"]["content"][0]["text"]

    params = {"name": "agentflow_watch_run", "arguments": {"run": "r1"}, "_meta": {"progressToken": 9}}
    frames = await rpc(edge, session, "tools/call", params)
    logs = [f["params"]["data"] for f in frames if f.get("method") == "notifications/message"]
    assert [e["seq"] for e in logs] == ["1", "2", "3"]  # int64 as a JSON string, as at the REST edge
    progress = [f["params"]["progress"] for f in frames if f.get("method") == "notifications/progress"]
    assert progress == [1, 2, 3]
    assert frames[-1]["result"]["structuredContent"]["state"] == "RUN_STATE_RUNNING"

    failed = await rpc(
        edge, session, "tools/call", {"name": "agentflow_watch_run", "arguments": {"run": "fail"}}
    )
    assert "FAILED_PRECONDITION STEP_FAILED: step exploded" in failed[-1]["result"]["content"][0]["text"]

    bad = await rpc(edge, session, "tools/call", {"name": "agentflow_start_run", "arguments": {"input": {}}})
    assert bad[-1]["error"]["code"] == types.INVALID_PARAMS
    assert "workflow must be a non-empty string" in bad[-1]["error"]["message"]


async def test_a_session_answers_only_its_owner_and_ends_with_delete(edge: httpx.AsyncClient) -> None:
    session = await open_session(edge, "developer", sub="dora", tenant="acme")
    for intruder in (
        bearer("developer", sub="eve", tenant="acme"),
        bearer("developer", sub="dora", tenant="x"),
    ):
        stolen = await edge.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers={**session, **intruder}
        )
        assert stolen.status_code == 404
    assert (await edge.delete("/mcp", headers=session)).status_code == 200
    gone = await edge.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=session)
    assert gone.status_code == 404


async def test_a_client_cancel_ends_the_bridge_stream(
    edge: httpx.AsyncClient, mesh: tuple[FakeBridge, FakeRunService, OneChannel, grpc.aio.Server]
) -> None:
    bridge = mesh[0]
    session = await open_session(edge)
    call = asyncio.ensure_future(rpc(edge, session, "tools/call", {"name": "slow", "arguments": {}}, rid=3))
    await bridge.slow_started.wait()
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}
    assert (await edge.post("/mcp", json=cancel, headers=session)).status_code == 202
    await bridge.slow_cancelled.wait()
    frames = await call
    assert frames[-1]["id"] == 3 and "error" in frames[-1]


async def test_an_unreachable_sandbox_is_an_internal_error(
    edge: httpx.AsyncClient, mesh: tuple[FakeBridge, FakeRunService, OneChannel, grpc.aio.Server]
) -> None:
    session = await open_session(edge)
    await mesh[3].stop(None)
    frames = await rpc(edge, session, "tools/list", {})
    assert frames[-1]["error"]["code"] == types.INTERNAL_ERROR
    assert frames[-1]["error"]["message"].startswith("UNAVAILABLE")


async def test_set_level_filters_the_log_messages_of_the_session(edge: httpx.AsyncClient) -> None:
    session = await open_session(edge)
    assert (await rpc(edge, session, "logging/setLevel", {"level": "warning"}))[-1]["result"] == {}
    params = {"name": "word-count", "arguments": {"text": "a b"}, "_meta": {"progressToken": "p"}}
    frames = await rpc(edge, session, "tools/call", params, rid=2)
    assert [f.get("method") for f in frames] == ["notifications/progress", None]  # the info line is dropped
    other = await open_session(edge)  # another session keeps the default
    frames = await rpc(edge, other, "tools/call", params, rid=2)
    assert [f.get("method") for f in frames] == ["notifications/message", "notifications/progress", None]
