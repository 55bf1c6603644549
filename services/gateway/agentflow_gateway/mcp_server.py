"""The MCP server behind `/mcp`: the SDK's low-level `Server` with AgentFlow's tool handlers.

Each request is answered for the caller of the HTTP request that carried it (the edge puts the authenticated
`Principal` and the forwarded trace headers in the ASGI scope):

- `tools/list`: the sandbox's tools the caller may use (asked over the McpBridge stream, which filters by
  tenant and role) followed by the run tools its role allows;
- `tools/call`: a run tool is served here (`mcp_runs`); any other name goes over the bridge to `ExecuteTool`
  (access check, argument validation, sandboxed execution, audit), its output relayed as log messages (and
  progress, when the request has a progress token) while it runs. A tool the caller may not use answers
  exactly like one that does not exist: JSON-RPC error -32602 `Unknown tool: <name>`.

The handlers are registered as raw request handlers rather than through `@server.call_tool()`: the SDK's
decorator turns every exception into an `isError` result, while an unknown (or forbidden) tool must be a
protocol error, and arguments are validated by the sandbox against the registry's schema.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence
from typing import Any

from agentflow_runtime.errors import AgentFlowError
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.session import ServerSession
from mcp.shared.exceptions import McpError
from starlette.requests import Request

from agentflow_gateway.auth import Principal
from agentflow_gateway.mcp_bridge import McpBridge
from agentflow_gateway.mcp_runs import Reporter, RunTools

__all__ = ["FORWARDED_KEY", "PRINCIPAL_KEY", "build_server"]

PRINCIPAL_KEY = "agentflow.principal"
FORWARDED_KEY = "agentflow.forwarded"
SERVER_NAME = "agentflow"
INSTRUCTIONS = (
    "AgentFlow's governed tools: every call runs in the tool-sandbox under its execution profile and is "
    "audited. Run tools start workflow runs and follow them."
)
_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_RANK = {level: rank for rank, level in enumerate(_LEVELS)}


def build_server(bridge: McpBridge, runs: RunTools, version: str = "") -> Server[Any, Request]:
    """The low-level MCP server whose handlers relay to the mesh (see the module docstring)."""
    server: Server[Any, Request] = Server(SERVER_NAME, version=version or None, instructions=INSTRUCTIONS)
    # `logging/setLevel` per session: log messages below it are not sent.
    thresholds: weakref.WeakKeyDictionary[ServerSession, int] = weakref.WeakKeyDictionary()

    async def list_tools(request: types.ListToolsRequest) -> types.ServerResult:
        principal, metadata = _caller(server)
        message: dict[str, Any] = {
            "jsonrpc": "2.0",
            "id": _request_id(server),
            "method": "tools/list",
            "params": {},
        }
        reply = await _last(bridge, message, metadata)
        tools = [types.Tool.model_validate(tool) for tool in reply["result"].get("tools", [])]
        return types.ServerResult(types.ListToolsResult(tools=[*tools, *runs.listed(principal)]))

    async def call_tool(request: types.CallToolRequest) -> types.ServerResult:
        principal, metadata = _caller(server)
        name, arguments = request.params.name, request.params.arguments or {}
        report = _reporter(server, request, thresholds)
        if runs.permits(principal, name):
            return types.ServerResult(await runs.call(name, arguments, metadata, report))
        message: dict[str, Any] = {
            "jsonrpc": "2.0",
            "id": _request_id(server),
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        chunks = itertools.count(1)
        reply: dict[str, Any] = {}
        try:
            async for frame in bridge.request(message, metadata):
                if frame.get("method") == "notifications/message":
                    params = frame.get("params") or {}
                    await report.log(params.get("data"), params.get("level"), params.get("logger"))
                    await report.progress(float(next(chunks)), str(params.get("logger") or "output"))
                elif "method" not in frame:
                    reply = frame
        except AgentFlowError as exc:
            raise _bridge_error(exc) from None
        _raise_error(reply)
        return types.ServerResult(types.CallToolResult.model_validate(reply.get("result") or {}))

    async def set_level(request: types.SetLevelRequest) -> types.ServerResult:
        thresholds[server.request_context.session] = _RANK[request.params.level]
        return types.ServerResult(types.EmptyResult())

    server.request_handlers[types.ListToolsRequest] = list_tools
    server.request_handlers[types.CallToolRequest] = call_tool
    server.request_handlers[types.SetLevelRequest] = set_level
    return server


def _caller(server: Server[Any, Request]) -> tuple[Principal, tuple[tuple[str, str], ...]]:
    """The principal of the HTTP request that carried the MCP request, and the metadata for the mesh."""
    http = server.request_context.request
    principal = http.scope.get(PRINCIPAL_KEY) if http is not None else None
    if not isinstance(principal, Principal):  # the edge authenticates every request before the SDK sees it
        raise McpError(types.ErrorData(code=types.INVALID_REQUEST, message="unauthenticated request"))
    forwarded: Sequence[tuple[str, str]] = http.scope.get(FORWARDED_KEY, ()) if http is not None else ()
    return principal, (*principal.metadata(), *forwarded)


def _request_id(server: Server[Any, Request]) -> types.RequestId:
    return server.request_context.request_id


def _reporter(
    server: Server[Any, Request],
    request: types.CallToolRequest,
    thresholds: weakref.WeakKeyDictionary[ServerSession, int],
) -> Reporter:
    """Notifications about `request`, sent on its own response stream."""
    ctx = server.request_context
    session, request_id = ctx.session, ctx.request_id
    meta = request.params.meta
    token = meta.progressToken if meta is not None else None

    async def log(data: Any, level: Any = "info", logger: Any = "agentflow.run") -> None:
        level = level if level in _RANK else "info"
        if _RANK[level] < thresholds.get(session, 0):
            return
        name = logger if isinstance(logger, str) else None
        await session.send_log_message(level, data, name, related_request_id=request_id)

    async def progress(value: float, message: str) -> None:
        if token is not None:
            await session.send_progress_notification(
                token, value, message=message, related_request_id=str(request_id)
            )

    return Reporter(log=log, progress=progress)


async def _last(
    bridge: McpBridge, message: dict[str, Any], metadata: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """The response to a request that streams nothing before it."""
    reply: dict[str, Any] = {}
    try:
        async for frame in bridge.request(message, metadata):
            if "method" not in frame:
                reply = frame
    except AgentFlowError as exc:
        raise _bridge_error(exc) from None
    _raise_error(reply)
    return reply


def _raise_error(reply: dict[str, Any]) -> None:
    error = reply.get("error")
    if isinstance(error, dict):
        raise McpError(types.ErrorData.model_validate(error))
    if not isinstance(reply.get("result"), dict):
        raise McpError(types.ErrorData(code=types.INTERNAL_ERROR, message="the tool-sandbox sent no result"))


def _bridge_error(exc: AgentFlowError) -> McpError:
    """The tool-sandbox could not answer (unavailable, deadline...): an internal error naming why."""
    return McpError(
        types.ErrorData(code=types.INTERNAL_ERROR, message=f"{exc.code.name} {exc.reason}: {exc.message}")
    )
