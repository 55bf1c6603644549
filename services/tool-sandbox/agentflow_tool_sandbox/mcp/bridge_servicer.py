"""McpBridgeService: answers the JSON-RPC the gateway's MCP endpoint relays, for the caller's tenant and role.

One Exchange carries one request. `tools/list` lists the tools the caller may use (anything else is not
listed); `tools/call` goes through ExecuteTool itself, the same path a workflow step takes (access check,
argument validation, execution, audit), with output chunks relayed as `notifications/message` while the tool
runs. A tool the caller may not use answers exactly like one that does not exist. A
`notifications/cancelled` frame (or the gateway cancelling the stream) stops the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from agentflow.tools.v1 import mcp_pb2, mcp_pb2_grpc, tools_pb2
from agentflow_runtime import context
from agentflow_runtime.errors import AgentFlowError, InvalidArgument, NotFound, PermissionDenied
from agentflow_runtime.protojson import py_from_value, struct_from_dict

from agentflow_tool_sandbox.mcp import access
from agentflow_tool_sandbox.registry import Registry
from agentflow_tool_sandbox.spec import TOOL_ID_PATTERN, ToolSpec

Ctx = grpc.aio.ServicerContext[Any, Any]
Execute = Callable[[tools_pb2.ExecuteToolRequest, Ctx], AsyncIterator[tools_pb2.ExecuteToolResponse]]

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
LIST_PAGE = 500


class McpBridgeServicer(mcp_pb2_grpc.McpBridgeServiceServicer):
    """See the module docstring."""

    def __init__(self, registry: Registry, execute: Execute) -> None:
        self.registry = registry
        self.execute = execute

    async def Exchange(  # noqa: N802 - the gRPC method name
        self, request_iterator: AsyncIterator[mcp_pb2.ExchangeRequest], ctx: Ctx
    ) -> AsyncIterator[mcp_pb2.ExchangeResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        try:
            message = json.loads(first.json_rpc)
        except ValueError:
            yield _frame(_error(None, INVALID_REQUEST, "not JSON"))
            return
        if not isinstance(message, dict):
            yield _frame(_error(None, INVALID_REQUEST, "not a JSON-RPC request"))
            return
        request_id, method = message.get("id"), message.get("method")
        params = message.get("params") or {}
        if method == "tools/list":
            yield _frame({"jsonrpc": "2.0", "id": request_id, "result": {"tools": await self._list()}})
        elif method == "tools/call":
            async for frame in self._call(request_id, params, request_iterator, ctx):
                yield _frame(frame)
        else:
            yield _frame(_error(request_id, METHOD_NOT_FOUND, f"method {method!r} is not bridged"))

    async def _list(self) -> list[dict[str, Any]]:
        call = context.current()
        tools: list[ToolSpec] = []
        offset = 0
        while True:
            page, next_offset = await self.registry.list(call.tenant, offset, LIST_PAGE)
            tools.extend(t for t in page if access.permits(t, call.tenant, call.role))
            if next_offset is None:
                break
            offset = next_offset
        return [
            {"name": t.tool_id, "description": t.description, "inputSchema": dict(t.input_schema) or _EMPTY}
            for t in tools
        ]

    async def _call(
        self,
        request_id: Any,
        params: dict[str, Any],
        more: AsyncIterator[mcp_pb2.ExchangeRequest],
        ctx: Ctx,
    ) -> AsyncIterator[dict[str, Any]]:
        name = params.get("name")
        arguments = params.get("arguments") or {}
        if (
            not isinstance(name, str)
            or not TOOL_ID_PATTERN.fullmatch(name)
            or not isinstance(arguments, dict)
        ):
            yield _error(request_id, INVALID_PARAMS, f"Unknown tool: {name}")
            return
        request = tools_pb2.ExecuteToolRequest(name=f"tools/{name}", arguments=struct_from_dict(arguments))
        frames: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        work = asyncio.ensure_future(self._run(request_id, request, ctx, frames))
        watcher = asyncio.ensure_future(_watch_cancel(more, work))
        try:
            while (frame := await frames.get()) is not None:
                yield frame
        finally:
            watcher.cancel()
            if not work.done():
                work.cancel()
            with contextlib.suppress(BaseException):
                await work

    async def _run(
        self,
        request_id: Any,
        request: tools_pb2.ExecuteToolRequest,
        ctx: Ctx,
        frames: asyncio.Queue[dict[str, Any] | None],
    ) -> None:
        try:
            async for reply in self.execute(request, ctx):
                if reply.HasField("chunk"):
                    stream = "stderr" if reply.chunk.stream == tools_pb2.OUTPUT_STREAM_STDERR else "stdout"
                    text = reply.chunk.data.decode("utf-8", "replace")
                    frames.put_nowait(_log(stream, text))
                elif reply.HasField("result"):
                    frames.put_nowait(
                        {"jsonrpc": "2.0", "id": request_id, "result": _tool_result(reply.result)}
                    )
        except (NotFound, PermissionDenied):
            frames.put_nowait(_error(request_id, INVALID_PARAMS, f"Unknown tool: {request.name[6:]}"))
        except InvalidArgument as exc:
            detail = "; ".join(f"{f}: {d}" for f, d in exc.violations) or exc.message
            frames.put_nowait(_error(request_id, INVALID_PARAMS, f"Invalid arguments: {detail}"))
        except AgentFlowError as exc:
            text = f"{exc.code.name} {exc.reason}: {exc.message}"
            result = {"content": [{"type": "text", "text": text}], "isError": True}
            frames.put_nowait({"jsonrpc": "2.0", "id": request_id, "result": result})
        except asyncio.CancelledError:
            frames.put_nowait(_error(request_id, INVALID_REQUEST, "cancelled"))
            raise
        finally:
            frames.put_nowait(None)


_EMPTY: dict[str, Any] = {"type": "object", "properties": {}}


async def _watch_cancel(more: AsyncIterator[mcp_pb2.ExchangeRequest], work: asyncio.Future[None]) -> None:
    """Cancel the call when the gateway relays `notifications/cancelled` for it."""
    async for frame in more:
        with contextlib.suppress(ValueError):
            if json.loads(frame.json_rpc).get("method") == "notifications/cancelled":
                work.cancel()
                return


def _tool_result(result: tools_pb2.ToolResult) -> dict[str, Any]:
    output = py_from_value(result.output)
    failed = result.exit_code != 0 or result.timed_out
    if failed:
        why = "timed out" if result.timed_out else f"exited with status {result.exit_code}"
        text = f"the tool {why}: {result.stderr[-2000:]}".rstrip(": ")
        return {"content": [{"type": "text", "text": text}], "isError": True}
    text = output if isinstance(output, str) else json.dumps(output)
    payload: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": False}
    if isinstance(output, dict):
        payload["structuredContent"] = output
    return payload


def _log(stream: str, text: str) -> dict[str, Any]:
    level = "warning" if stream == "stderr" else "info"
    return {
        "jsonrpc": "2.0",
        "method": "notifications/message",
        "params": {"level": level, "logger": stream, "data": text},
    }


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _frame(message: dict[str, Any]) -> mcp_pb2.ExchangeResponse:
    return mcp_pb2.ExchangeResponse(json_rpc=json.dumps(message))
