"""Calls into the mesh: one cached multi-callable per method, typed (REST) or raw bytes (gRPC pass-through).

Each public proto service is served by one mesh service (`agentflow_runtime.descriptors.SERVICE_OWNERS`):
RunService and ApprovalService by the worker, WorkflowService by the planner, ToolService by tool-sandbox,
ModelService by model-gateway, MemoryService by memory, AuditService by audit.
"""

from __future__ import annotations

from typing import Any, Protocol

import grpc

from agentflow_gateway.routes import Method

__all__ = ["Backends", "ChannelSource"]


class ChannelSource(Protocol):
    """Where channels come from: `agentflow_runtime.clients.Channels` in the mesh, anything in tests."""

    def get(self, service: str) -> grpc.aio.Channel: ...


class Backends:
    """Multi-callables per gRPC path, created on first use and kept (the channel is reused)."""

    def __init__(self, channels: ChannelSource) -> None:
        self._channels = channels
        self._unary: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        self._stream: dict[str, grpc.aio.UnaryStreamMultiCallable[Any, Any]] = {}
        self._raw_unary: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        self._raw_stream: dict[str, grpc.aio.UnaryStreamMultiCallable[bytes, bytes]] = {}

    def channel(self, method: Method) -> grpc.aio.Channel:
        """The channel to the service that owns `method`."""
        return self._channels.get(method.mesh_service)

    def unary(self, method: Method) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        callable_ = self._unary.get(method.grpc_path)
        if callable_ is None:
            callable_ = self._channels.get(method.mesh_service).unary_unary(
                method.grpc_path,
                request_serializer=method.request_class.SerializeToString,
                response_deserializer=method.response_class.FromString,
            )
            self._unary[method.grpc_path] = callable_
        return callable_

    def stream(self, method: Method) -> grpc.aio.UnaryStreamMultiCallable[Any, Any]:
        callable_ = self._stream.get(method.grpc_path)
        if callable_ is None:
            callable_ = self._channels.get(method.mesh_service).unary_stream(
                method.grpc_path,
                request_serializer=method.request_class.SerializeToString,
                response_deserializer=method.response_class.FromString,
            )
            self._stream[method.grpc_path] = callable_
        return callable_

    def raw_unary(self, method: Method) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        callable_ = self._raw_unary.get(method.grpc_path)
        if callable_ is None:
            callable_ = self._channels.get(method.mesh_service).unary_unary(
                method.grpc_path, request_serializer=None, response_deserializer=None
            )
            self._raw_unary[method.grpc_path] = callable_
        return callable_

    def raw_stream(self, method: Method) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
        callable_ = self._raw_stream.get(method.grpc_path)
        if callable_ is None:
            callable_ = self._channels.get(method.mesh_service).unary_stream(
                method.grpc_path, request_serializer=None, response_deserializer=None
            )
            self._raw_stream[method.grpc_path] = callable_
        return callable_
