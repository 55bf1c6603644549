"""Protobuf <-> domain translation for McpServerService."""

from __future__ import annotations

from agentflow.tools.v1 import mcp_pb2
from agentflow_runtime.breaker import CircuitState
from agentflow_runtime.errors import InvalidArgument
from agentflow_runtime.protojson import timestamp
from google.protobuf import json_format

from agentflow_tool_sandbox.mcp.model import ServerSpec, StdioTransport
from agentflow_tool_sandbox.mcp.parse import parse_server
from agentflow_tool_sandbox.mcp.servers import ServerStatus
from agentflow_tool_sandbox.spec import ToolAccess, ToolSpec

_CIRCUITS = {
    CircuitState.CLOSED: mcp_pb2.CIRCUIT_STATE_CLOSED,
    CircuitState.OPEN: mcp_pb2.CIRCUIT_STATE_OPEN,
    CircuitState.HALF_OPEN: mcp_pb2.CIRCUIT_STATE_HALF_OPEN,
}


def server_from_proto(server_id: str, server: mcp_pb2.McpServer) -> ServerSpec:
    """The registration a CreateMcpServer request asks for; InvalidArgument lists every problem."""
    document = json_format.MessageToDict(server, preserving_proto_field_name=True)
    spec, problems = parse_server(document, server_id=server_id)
    if spec is None:
        prefixed = [(f if f == "mcp_server_id" else f"mcp_server.{f}", d) for f, d in problems]
        raise InvalidArgument("the MCP server registration is not valid", violations=prefixed)
    return spec


def mcp_origin(tool: ToolSpec) -> mcp_pb2.McpToolOrigin | None:
    """The McpToolOrigin of an imported tool; None for a native one."""
    if tool.mcp is None:
        return None
    return mcp_pb2.McpToolOrigin(server=f"mcpServers/{tool.mcp.server_id}", remote_name=tool.mcp.remote_name)


def access_to_proto(access: ToolAccess) -> mcp_pb2.ToolAccess:
    """The ToolAccess message."""
    return mcp_pb2.ToolAccess(roles=list(access.roles), tenants=list(access.tenants))


def server_to_proto(spec: ServerSpec, status: ServerStatus, tools: list[str]) -> mcp_pb2.McpServer:
    """The McpServer message, with this instance's view of its state."""
    message = mcp_pb2.McpServer(
        name=spec.name,
        description=spec.description,
        timeout_seconds=spec.timeout_seconds,
        retry=mcp_pb2.McpRetryPolicy(
            max_attempts=spec.retry.max_attempts,
            initial_backoff_seconds=spec.retry.initial_backoff_seconds,
            max_backoff_seconds=spec.retry.max_backoff_seconds,
            multiplier=spec.retry.multiplier,
        ),
        circuit_breaker=mcp_pb2.McpCircuitBreaker(
            failure_threshold=spec.breaker.failure_threshold, open_seconds=spec.breaker.open_seconds
        ),
        access=access_to_proto(spec.access),
        origin=spec.origin,
        state=(
            mcp_pb2.MCP_SERVER_STATE_CONNECTED
            if status.connected
            else mcp_pb2.MCP_SERVER_STATE_FAILED
            if status.failed
            else mcp_pb2.MCP_SERVER_STATE_DISCONNECTED
        ),
        circuit_state=_CIRCUITS[status.circuit],
        tools=tools,
        last_error=status.last_error,
        create_time=timestamp(spec.create_time),
        sync_time=timestamp(status.sync_time),
    )
    transport = spec.transport
    if isinstance(transport, StdioTransport):
        message.stdio.CopyFrom(
            mcp_pb2.McpStdioTransport(
                command=list(transport.command), env=dict(transport.env), pass_env=list(transport.pass_env)
            )
        )
    else:
        message.http.CopyFrom(
            mcp_pb2.McpHttpTransport(
                url=transport.url,
                headers=dict(transport.headers),
                headers_from_env=dict(transport.headers_from_env),
            )
        )
    return message
