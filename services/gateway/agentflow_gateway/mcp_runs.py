"""Run tools of the MCP endpoint: start a run, get it, watch it to the end.

They are served by the gateway itself, calling the worker's `RunService` exactly as the REST edge does (the
caller's identity and tenant in the metadata, the same role rule: starting a run needs `developer`, reading
one `viewer`). A caller whose role is too low neither sees nor can call them. Their names contain `_`, which
tool ids of the registry never do, so they cannot collide with a sandbox tool.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from agentflow.runs.v1 import runs_pb2
from agentflow_runtime.errors import AgentFlowError, from_rpc_error
from agentflow_runtime.protojson import integral_numbers, struct_from_dict
from google.protobuf import json_format, message
from mcp import types
from mcp.shared.exceptions import McpError

from agentflow_gateway.auth import Principal
from agentflow_gateway.backends import Backends
from agentflow_gateway.rbac import allows
from agentflow_gateway.routes import Method

__all__ = ["RUN_TOOLS", "Reporter", "RunTools"]

START, GET, WATCH = "agentflow_start_run", "agentflow_get_run", "agentflow_watch_run"
_SERVICE = "/agentflow.runs.v1.RunService/"
_RPC = {START: "StartRun", GET: "GetRun", WATCH: "WatchRun"}
DEFAULT_TIMEOUT = 30.0

_RUN_NAME = {"type": "string", "description": "The run: `runs/{id}` or just the id."}
RUN_TOOLS: dict[str, types.Tool] = {
    START: types.Tool(
        name=START,
        title="Start a workflow run",
        description="Start a run of a workflow with an input; returns the run (its `name` is `runs/{id}`).",
        inputSchema={
            "type": "object",
            "properties": {
                "workflow": {
                    "type": "string",
                    "description": "The workflow: `workflows/{id}` or just the id.",
                },
                "input": {"type": "object", "description": "The run's input, available to steps as `input`."},
                "request_id": {
                    "type": "string",
                    "description": "Idempotency key: a repeat returns the same run.",
                },
            },
            "required": ["workflow"],
        },
    ),
    GET: types.Tool(
        name=GET,
        title="Get a run",
        description="Get a run: its state, steps, output or error.",
        inputSchema={"type": "object", "properties": {"run": _RUN_NAME}, "required": ["run"]},
    ),
    WATCH: types.Tool(
        name=WATCH,
        title="Watch a run to its end",
        description=(
            "Follow a run until it finishes: each event is sent as a log message (and as progress when the "
            "request has a progress token); returns the finished run."
        ),
        inputSchema={
            "type": "object",
            "properties": {
                "run": _RUN_NAME,
                "after_seq": {"type": "integer", "description": "Only events after this sequence number."},
            },
            "required": ["run"],
        },
    ),
}


@dataclass(frozen=True, slots=True)
class Reporter:
    """Sends notifications about the request being served (log messages, progress) to the MCP client."""

    log: Callable[..., Awaitable[None]]
    """`log(data, level="info", logger="agentflow.run")`: a `notifications/message`."""
    progress: Callable[[float, str], Awaitable[None]]


class RunTools:
    """See the module docstring."""

    def __init__(self, backends: Backends, methods: Mapping[str, Method]) -> None:
        self._backends = backends
        self._methods = {tool: methods[_SERVICE + rpc] for tool, rpc in _RPC.items()}

    def listed(self, principal: Principal) -> list[types.Tool]:
        """The run tools the principal's role may call."""
        return [RUN_TOOLS[name] for name in RUN_TOOLS if self.permits(principal, name)]

    def permits(self, principal: Principal, name: str) -> bool:
        method = self._methods.get(name)
        return method is not None and allows(principal, method)

    async def call(
        self,
        name: str,
        arguments: Mapping[str, Any],
        metadata: Sequence[tuple[str, str]],
        report: Reporter,
    ) -> types.CallToolResult:
        """Call a run tool the caller is permitted (`permits`); a failed call is an `isError` result."""
        method = self._methods[name]
        try:
            if name == START:
                request: message.Message = runs_pb2.StartRunRequest(
                    workflow=_name("workflows/", _text(arguments, "workflow")),
                    input=struct_from_dict(_object(arguments, "input")),
                    request_id=_text(arguments, "request_id", required=False),
                )
                return _run_result(await self._unary(method, request, metadata))
            run = _name("runs/", _text(arguments, "run"))
            if name == GET:
                return _run_result(await self._unary(method, runs_pb2.GetRunRequest(name=run), metadata))
            after = arguments.get("after_seq", 0)
            if not isinstance(after, int) or isinstance(after, bool) or after < 0:
                raise _invalid("after_seq must be a non-negative integer")
            await self._watch(method, runs_pb2.WatchRunRequest(name=run, after_seq=after), metadata, report)
            return _run_result(
                await self._unary(self._methods[GET], runs_pb2.GetRunRequest(name=run), metadata)
            )
        except AgentFlowError as exc:
            text = f"{exc.code.name} {exc.reason}: {exc.message}"
            return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)

    async def _unary(
        self, method: Method, request: message.Message, metadata: Sequence[tuple[str, str]]
    ) -> message.Message:
        try:
            response: message.Message = await self._backends.unary(method)(
                request, timeout=DEFAULT_TIMEOUT, metadata=tuple(metadata)
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return response

    async def _watch(
        self,
        method: Method,
        request: runs_pb2.WatchRunRequest,
        metadata: Sequence[tuple[str, str]],
        report: Reporter,
    ) -> None:
        call = self._backends.stream(method)(request, metadata=tuple(metadata))
        try:
            async for event in call:
                payload = _payload(event)
                await report.log(payload)
                await report.progress(float(event.seq), str(payload.get("type", "")))
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()


def _payload(response: message.Message) -> dict[str, Any]:
    """The REST edge's JSON form of a message (camelCase, whole doubles as integers)."""
    payload: dict[str, Any] = integral_numbers(json_format.MessageToDict(response))
    return payload


def _run_result(run: message.Message) -> types.CallToolResult:
    payload = _payload(run)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(payload))],
        structuredContent=payload,
        isError=False,
    )


def _name(prefix: str, value: str) -> str:
    return value if value.startswith(prefix) else prefix + value


def _text(arguments: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = arguments.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        raise _invalid(f"{key} must be a non-empty string")
    return value


def _object(arguments: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = arguments.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{key} must be an object")
    return value


def _invalid(why: str) -> McpError:
    return McpError(types.ErrorData(code=types.INVALID_PARAMS, message=f"Invalid arguments: {why}"))
