"""ToolService over gRPC: translates messages and delegates to the registry and executions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
from agentflow.tools.v1 import tools_pb2, tools_pb2_grpc
from agentflow_runtime import context
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.errors import InvalidArgument
from agentflow_runtime.pagination import clamp_page_size, decode_token, encode_token
from agentflow_runtime.protojson import dict_from_struct
from google.protobuf import empty_pb2

from agentflow_tool_sandbox import call_audit, convert, egress
from agentflow_tool_sandbox.arguments import args_digest, validate_arguments
from agentflow_tool_sandbox.denials import SandboxDenied
from agentflow_tool_sandbox.events import Result
from agentflow_tool_sandbox.executions import Executions
from agentflow_tool_sandbox.mcp import access
from agentflow_tool_sandbox.registry import Registry
from agentflow_tool_sandbox.spec import tool_id_from_name

Ctx = grpc.aio.ServicerContext[Any, Any]

MAX_IDEMPOTENCY_KEY = 256


class ToolServicer(tools_pb2_grpc.ToolServiceServicer):
    """The ToolService implementation."""

    def __init__(self, registry: Registry, executions: Executions, audit: AuditSink) -> None:
        self.registry = registry
        self.executions = executions
        self.audit = audit

    async def CreateTool(self, request: tools_pb2.CreateToolRequest, ctx: Ctx) -> tools_pb2.Tool:
        tool = convert.tool_from_proto(request.tool_id, request.tool)
        field = convert.limits_field(request.tool)
        created = await self.registry.create(context.current().tenant, tool, limits_field=field)
        return convert.tool_to_proto(created)

    async def UpdateTool(self, request: tools_pb2.UpdateToolRequest, ctx: Ctx) -> tools_pb2.Tool:
        tool_id = _tool_id(request.tool.name, field="tool.name")
        changed = convert.tool_from_proto(tool_id, request.tool)
        tenant = context.current().tenant
        mask = list(request.update_mask.paths)
        field = convert.limits_field(request.tool)
        updated = await self.registry.update(tenant, changed, mask, limits_field=field)
        self.audit.record(
            "tool.update", updated.name, "ok", details={"fields": list(request.update_mask.paths)}
        )
        return convert.tool_to_proto(updated)

    async def GetTool(self, request: tools_pb2.GetToolRequest, ctx: Ctx) -> tools_pb2.Tool:
        tool = await self.registry.get(context.current().tenant, _tool_id(request.name))
        return convert.tool_to_proto(tool)

    async def ListTools(self, request: tools_pb2.ListToolsRequest, ctx: Ctx) -> tools_pb2.ListToolsResponse:
        offset = decode_token(request.page_token)
        size = clamp_page_size(request.page_size)
        page, next_offset = await self.registry.list(context.current().tenant, offset, size)
        return tools_pb2.ListToolsResponse(
            tools=[convert.tool_to_proto(t) for t in page],
            next_page_token="" if next_offset is None else encode_token(next_offset),
        )

    async def DeleteTool(self, request: tools_pb2.DeleteToolRequest, ctx: Ctx) -> empty_pb2.Empty:
        await self.registry.delete(context.current().tenant, _tool_id(request.name))
        return empty_pb2.Empty()

    async def ExecuteTool(
        self, request: tools_pb2.ExecuteToolRequest, ctx: Ctx
    ) -> AsyncIterator[tools_pb2.ExecuteToolResponse]:
        call = context.current()
        tenant = call.tenant
        tool = await self.registry.get(tenant, _tool_id(request.name))
        arguments = dict_from_struct(request.arguments)
        audited = call_audit.ToolCall(tool.tool_id, request.run, request.step_id, args_digest(arguments))
        if not access.permits(tool, tenant, call.role):
            call_audit.denied(self.audit, audited, "access", sandbox=False)
            access.check(tool, tenant, call.role)
        problems = validate_arguments(tool.input_schema, arguments)
        if len(request.idempotency_key) > MAX_IDEMPOTENCY_KEY:
            problems.append(("idempotency_key", f"at most {MAX_IDEMPOTENCY_KEY} characters"))
        if problems:
            call_audit.denied(self.audit, audited, "invalid_arguments", sandbox=False)
            raise InvalidArgument("the arguments do not match the tool's input schema", violations=problems)
        egress.bind_step(request.run, request.step_id)  # names them in the audit of its egress attempts
        result: Result | None = None
        ended: str | None = "cancelled"
        try:
            events = self.executions.execute(tenant, tool, arguments, request.idempotency_key)
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, Result):
                        result = event
                    yield convert.event_to_proto(event)
        except SandboxDenied as exc:
            ended = None
            call_audit.denied(self.audit, audited, exc.reason.lower(), sandbox=True)
            raise
        except Exception:
            ended = "error"
            raise
        finally:
            if ended is not None or result is not None:
                call_audit.finished(self.audit, audited, result, ended or "error")

    async def CancelToolExecution(
        self, request: tools_pb2.CancelToolExecutionRequest, ctx: Ctx
    ) -> tools_pb2.CancelToolExecutionResponse:
        tool_id = _tool_id(request.name)
        problems = []
        if not request.idempotency_key:
            problems.append(("idempotency_key", "required: only keyed executions outlive their caller"))
        elif len(request.idempotency_key) > MAX_IDEMPOTENCY_KEY:
            problems.append(("idempotency_key", f"at most {MAX_IDEMPOTENCY_KEY} characters"))
        if problems:
            raise InvalidArgument("a cancel needs the execution's idempotency key", violations=problems)
        state = await self.executions.cancel(context.current().tenant, tool_id, request.idempotency_key)
        self.audit.record(
            "tool.cancel_execution",
            request.name,
            "ok",
            details={"idempotency_key": request.idempotency_key, "state": state},
        )
        return tools_pb2.CancelToolExecutionResponse(state=state)


def _tool_id(name: str, field: str = "name") -> str:
    tool_id = tool_id_from_name(name)
    if tool_id is None:
        raise InvalidArgument(f"{name!r} is not a tool name", violations=[(field, "must be tools/{tool}")])
    return tool_id
