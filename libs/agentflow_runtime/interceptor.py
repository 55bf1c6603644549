"""The server interceptor every service runs: identity ACL, call context, errors, metrics.

It wraps each handler so that:
- the peer's certificate identity is checked against `acl` (PERMISSION_DENIED otherwise);
- the call context (tenant, principal, role, caller) is bound for the handler and what it calls;
- an `AgentFlowError` becomes its `google.rpc.Status`; any other exception a generic INTERNAL
  (logged here, never sent);
- the outcome is counted in Prometheus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
from grpc_status import rpc_status

from agentflow_runtime import acl, context
from agentflow_runtime.errors import AgentFlowError, PermissionDenied, internal_status
from agentflow_runtime.metrics import RPC_SECONDS, RPCS_HANDLED, split_method
from agentflow_runtime.tls import peer_identity

log = logging.getLogger("agentflow.rpc")
Ctx = grpc.aio.ServicerContext[Any, Any]

# Health and reflection answer any authenticated peer (probes, grpcurl).
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class RuntimeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """See the module docstring."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(method, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(method, handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _admit(method: str, ctx: Ctx) -> context.CallContext:
    identity = peer_identity(ctx)
    if not method.startswith(_OPEN_PREFIXES) and not acl.allowed(method, identity):
        raise PermissionDenied(
            f"identity {identity or '(none)'!r} may not call {method}",
            reason="CALLER_NOT_ALLOWED",
            metadata={"caller": identity, "method": method},
        )
    return context.from_metadata(tuple(ctx.invocation_metadata() or ()), identity, ctx)


async def _fail(method: str, ctx: Ctx, exc: BaseException) -> None:
    if isinstance(exc, AgentFlowError):
        status = exc.to_status()
    else:
        log.error("unhandled error in %s", method, exc_info=exc)
        status = internal_status()
    # grpc-stubs lacks abort_with_status on the aio context; grpcio has it.
    await cast(Any, ctx).abort_with_status(rpc_status.to_status(status))


def _record(method: str, ctx: Ctx, started: float, code: grpc.StatusCode | None) -> None:
    service, name = split_method(method)
    final = code or ctx.code() or grpc.StatusCode.OK
    label = final.name if isinstance(final, grpc.StatusCode) else str(final)
    RPCS_HANDLED.labels(service, name, label).inc()
    RPC_SECONDS.labels(service, name).observe(time.perf_counter() - started)


def _wrap_unary(method: str, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, ctx: Ctx) -> Any:
        started = time.perf_counter()
        code: grpc.StatusCode | None = None
        try:
            with context.bound(_admit(method, ctx)):
                return await behavior(request, ctx)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:
            code = exc.code if isinstance(exc, AgentFlowError) else grpc.StatusCode.INTERNAL
            await _fail(method, ctx, exc)
        finally:
            _record(method, ctx, started, code)

    return handle


def _wrap_stream(method: str, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, ctx: Ctx) -> AsyncIterator[Any]:
        started = time.perf_counter()
        code: grpc.StatusCode | None = None
        try:
            with context.bound(_admit(method, ctx)):
                async for item in behavior(request, ctx):
                    yield item
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:
            code = exc.code if isinstance(exc, AgentFlowError) else grpc.StatusCode.INTERNAL
            await _fail(method, ctx, exc)
        finally:
            _record(method, ctx, started, code)

    return handle
