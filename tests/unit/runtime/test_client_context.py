"""Outgoing calls carry the current call's tenant, unary and server-streaming alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from agentflow.tools.v1 import tools_pb2, tools_pb2_grpc
from agentflow_runtime import context
from agentflow_runtime.clients import _ContextMetadata, _StreamContextMetadata


class Echo(tools_pb2_grpc.ToolServiceServicer):
    def __init__(self) -> None:
        self.tenants: list[str] = []

    def _tenant(self, ctx: Any) -> None:
        self.tenants.append(dict(ctx.invocation_metadata() or ()).get(context.TENANT_KEY, ""))

    async def GetTool(self, request: tools_pb2.GetToolRequest, ctx: Any) -> tools_pb2.Tool:
        self._tenant(ctx)
        return tools_pb2.Tool(name=request.name)

    async def ExecuteTool(
        self, request: tools_pb2.ExecuteToolRequest, ctx: Any
    ) -> AsyncIterator[tools_pb2.ExecuteToolResponse]:
        self._tenant(ctx)
        yield tools_pb2.ExecuteToolResponse()


async def test_unary_and_streaming_calls_carry_the_tenant() -> None:
    echo = Echo()  # type: ignore[abstract]
    server = grpc.aio.server()
    tools_pb2_grpc.add_ToolServiceServicer_to_server(echo, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    interceptors: list[Any] = [_ContextMetadata(), _StreamContextMetadata()]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=interceptors) as channel:
            stub = tools_pb2_grpc.ToolServiceStub(channel)
            with context.bound(context.CallContext(tenant="acme")):
                await stub.GetTool(tools_pb2.GetToolRequest(name="tools/x"), timeout=10)
                _ = [
                    r
                    async for r in stub.ExecuteTool(tools_pb2.ExecuteToolRequest(name="tools/x"), timeout=10)
                ]
    finally:
        await server.stop(None)
    assert echo.tenants == ["acme", "acme"]
