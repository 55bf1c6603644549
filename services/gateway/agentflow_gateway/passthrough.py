"""gRPC pass-through: the gateway's gRPC server forwards calls to the public services as raw bytes.

The handler never decodes a message: requests and responses cross as the bytes they arrived in, so any
client built from the contracts works unchanged. Each call is authenticated by the same JWT as REST (the
`authorization` metadata), checked against the same roles, and forwarded with the caller's other metadata,
the identity taken from the token (client-sent `x-af-*` keys are dropped) and the caller's deadline. A
backend error is returned as it came, rich status trailer included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn, cast

import grpc
from agentflow_runtime.errors import AgentFlowError
from google.rpc import status_pb2

from agentflow_gateway.auth import Authenticator, Principal
from agentflow_gateway.backends import Backends
from agentflow_gateway.errors import DETAILS_TRAILER
from agentflow_gateway.rbac import authorize
from agentflow_gateway.routes import Method

__all__ = ["PassthroughHandler"]

Context = grpc.aio.ServicerContext[bytes, bytes]
DEFAULT_TIMEOUT = 30.0
# Transport-level keys that the channel sets itself; the caller's credentials and identity are replaced.
_DROPPED = frozenset({"authorization", "user-agent", "content-type", "te", "grpc-timeout", "grpc-encoding"})
_DROPPED_PREFIXES = ("x-af-", "grpc-accept-", ":")


class PassthroughHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Serves every method of the public services by forwarding it to the owning mesh service."""

    def __init__(
        self,
        methods: Mapping[str, Method],
        backends: Backends,
        authenticator: Authenticator,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._backends = backends
        self._auth = authenticator
        self._default_timeout = default_timeout
        self._handlers = {path: self._handler(method) for path, method in methods.items()}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:  # type: ignore[type-arg]
        return self._handlers.get(handler_call_details.method)

    def _handler(self, method: Method) -> grpc.RpcMethodHandler:  # type: ignore[type-arg]
        if method.client_streaming and method.server_streaming:
            return grpc.stream_stream_rpc_method_handler(self._stream_stream(method))
        if method.client_streaming:
            return grpc.stream_unary_rpc_method_handler(self._stream_unary(method))
        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(self._unary_stream(method))
        return grpc.unary_unary_rpc_method_handler(self._unary_unary(method))

    def _admit(self, method: Method, context: Context) -> tuple[tuple[str, str | bytes], ...]:
        """Authenticates and authorizes the caller; returns the metadata to forward."""
        incoming = cast(tuple[tuple[str, str | bytes], ...], tuple(context.invocation_metadata() or ()))
        authorization = next((v for k, v in incoming if k == "authorization"), None)
        principal: Principal = self._auth.authenticate(
            authorization.decode("latin-1") if isinstance(authorization, bytes) else authorization
        )
        authorize(principal, method)
        kept = tuple((k, v) for k, v in incoming if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES))
        return (*principal.metadata(), *kept)

    def _deadline(self, context: Context, *, streaming: bool) -> float | None:
        remaining = context.time_remaining()
        if remaining is None:
            return None if streaming else self._default_timeout
        return max(0.0, float(remaining))

    def _unary_unary(self, method: Method) -> Any:
        async def behavior(request: bytes, context: Context) -> bytes:
            try:
                metadata = self._admit(method, context)
                call = self._backends.raw_unary(method)
                return await call(
                    request, timeout=self._deadline(context, streaming=False), metadata=metadata
                )
            except (grpc.aio.AioRpcError, AgentFlowError) as exc:
                await _abort(context, exc)

        return behavior

    def _unary_stream(self, method: Method) -> Any:
        async def behavior(request: bytes, context: Context) -> AsyncIterator[bytes]:
            try:
                metadata = self._admit(method, context)
                call = self._backends.raw_stream(method)
                async for chunk in call(
                    request, timeout=self._deadline(context, streaming=True), metadata=metadata
                ):
                    yield chunk
            except (grpc.aio.AioRpcError, AgentFlowError) as exc:
                await _abort(context, exc)

        return behavior

    def _stream_unary(self, method: Method) -> Any:
        async def behavior(requests: AsyncIterator[bytes], context: Context) -> bytes:
            try:
                metadata = self._admit(method, context)
                channel = self._backends.channel(method)
                call = channel.stream_unary(
                    method.grpc_path, request_serializer=None, response_deserializer=None
                )
                response: bytes = await call(
                    requests, timeout=self._deadline(context, streaming=True), metadata=metadata
                )
                return response
            except (grpc.aio.AioRpcError, AgentFlowError) as exc:
                await _abort(context, exc)

        return behavior

    def _stream_stream(self, method: Method) -> Any:
        async def behavior(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
            try:
                metadata = self._admit(method, context)
                channel = self._backends.channel(method)
                call = channel.stream_stream(
                    method.grpc_path, request_serializer=None, response_deserializer=None
                )
                async for chunk in call(
                    requests, timeout=self._deadline(context, streaming=True), metadata=metadata
                ):
                    yield chunk
            except (grpc.aio.AioRpcError, AgentFlowError) as exc:
                await _abort(context, exc)

        return behavior


async def _abort(context: Context, exc: grpc.aio.AioRpcError | AgentFlowError) -> NoReturn:
    """Ends the call with the error's status, rich details included."""
    if isinstance(exc, AgentFlowError):
        status: status_pb2.Status = exc.to_status()
        await context.abort(exc.code, status.message, ((DETAILS_TRAILER, status.SerializeToString()),))
    trailers = tuple(
        (k, v) for k, v in cast(tuple[tuple[str, str | bytes], ...], tuple(exc.trailing_metadata() or ()))
    )
    await context.abort(exc.code(), exc.details() or "", trailers)
