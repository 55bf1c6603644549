"""McpServerService over gRPC: translates messages and delegates to McpServers."""

from __future__ import annotations

from typing import Any

import grpc
from agentflow.tools.v1 import mcp_pb2, mcp_pb2_grpc
from agentflow_runtime import context
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.errors import InvalidArgument
from agentflow_runtime.pagination import clamp_page_size, decode_token, encode_token
from google.protobuf import empty_pb2

from agentflow_tool_sandbox.mcp import convert
from agentflow_tool_sandbox.mcp.model import ServerSpec
from agentflow_tool_sandbox.mcp.naming import server_id_from_name
from agentflow_tool_sandbox.mcp.servers import McpServers

Ctx = grpc.aio.ServicerContext[Any, Any]


class McpServerServicer(mcp_pb2_grpc.McpServerServiceServicer):
    """The McpServerService implementation."""

    def __init__(self, servers: McpServers, audit: AuditSink) -> None:
        self.servers = servers
        self.audit = audit

    async def CreateMcpServer(self, request: mcp_pb2.CreateMcpServerRequest, ctx: Ctx) -> mcp_pb2.McpServer:
        spec = convert.server_from_proto(request.mcp_server_id, request.mcp_server)
        created = await self.servers.register(context.current().tenant, spec)
        self.audit.record("mcp_server.create", created.name, "ok", details={"origin": created.origin})
        return await self._proto(created)

    async def GetMcpServer(self, request: mcp_pb2.GetMcpServerRequest, ctx: Ctx) -> mcp_pb2.McpServer:
        spec = await self.servers.spec(context.current().tenant, _server_id(request.name))
        return await self._proto(spec)

    async def ListMcpServers(
        self, request: mcp_pb2.ListMcpServersRequest, ctx: Ctx
    ) -> mcp_pb2.ListMcpServersResponse:
        offset = decode_token(request.page_token)
        size = clamp_page_size(request.page_size)
        specs = await self.servers.specs(context.current().tenant)
        page = specs[offset : offset + size]
        more = len(specs) > offset + size
        return mcp_pb2.ListMcpServersResponse(
            mcp_servers=[await self._proto(s) for s in page],
            next_page_token=encode_token(offset + size) if more else "",
        )

    async def DeleteMcpServer(self, request: mcp_pb2.DeleteMcpServerRequest, ctx: Ctx) -> empty_pb2.Empty:
        await self.servers.unregister(context.current().tenant, _server_id(request.name))
        self.audit.record("mcp_server.delete", request.name, "ok")
        return empty_pb2.Empty()

    async def SyncMcpServer(self, request: mcp_pb2.SyncMcpServerRequest, ctx: Ctx) -> mcp_pb2.McpServer:
        spec = await self.servers.spec(context.current().tenant, _server_id(request.name))
        await self.servers.sync(spec)
        self.audit.record("mcp_server.sync", spec.name, "ok")
        return await self._proto(spec)

    async def _proto(self, spec: ServerSpec) -> mcp_pb2.McpServer:
        return convert.server_to_proto(spec, self.servers.status(spec), await self.servers.server_tools(spec))


def _server_id(name: str) -> str:
    server_id = server_id_from_name(name)
    if server_id is None:
        raise InvalidArgument(
            f"{name!r} is not an MCP server name", violations=[("name", "must be mcpServers/{server}")]
        )
    return server_id
