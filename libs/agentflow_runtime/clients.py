"""mTLS channels to other services: identity, retries for idempotent reads, context and deadlines."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc

from agentflow_runtime import context, telemetry, tls
from agentflow_runtime.context import call_timeout
from agentflow_runtime.descriptors import methods_of
from agentflow_runtime.settings import Settings

__all__ = ["Channels", "call_timeout", "retry_service_config"]

_READ_METHOD_PREFIXES = ("Get", "List", "Watch", "Query", "Verify", "Validate")


def retry_service_config(service_names: list[str] | None = None) -> str:
    """A gRPC service config retrying UNAVAILABLE for reads (the methods safe to repeat)."""
    retry = {
        "maxAttempts": 4,
        "initialBackoff": "0.05s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    names = []
    for full_service, method in methods_of(service_names):
        if method.startswith(_READ_METHOD_PREFIXES):
            names.append({"service": full_service, "method": method})
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": retry}] if names else []})


def _with_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    """`details` plus the current call's tenant/principal/role (unless the caller set them) and deadline."""
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    for key, value in context.current().metadata():
        if key not in metadata:
            metadata[key] = value
    timeout = details.timeout
    if timeout is None:
        timeout = context.current().time_remaining()
    return grpc.aio.ClientCallDetails(
        details.method, timeout, metadata, details.credentials, details.wait_for_ready
    )


class _ContextMetadata(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Adds the current call's context to unary calls.

    One class per call kind: grpc.aio files an interceptor under the first kind it implements only
    (an if/elif on its type), so a single class implementing several kinds silently skips the others
    (server-streaming calls such as ExecuteTool then lost the tenant).
    """

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_context(client_call_details), request)


class _StreamContextMetadata(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    """Adds the current call's context to server-streaming calls (see `_ContextMetadata`)."""

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_context(client_call_details), request)


class Channels:
    """One lazily created mTLS channel per target service, presenting `identity`'s certificate."""

    def __init__(self, settings: Settings, identity: str, *, intercepted: bool = True) -> None:
        """`intercepted=False` gives plain channels, for a caller that sets metadata and trace context itself
        (the edge): any client interceptor moves every call onto gRPC's slower intercepted path."""
        self.settings = settings
        self.identity = identity
        self.intercepted = intercepted
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, service: str) -> grpc.aio.Channel:
        """The channel to `service` (created on first use)."""
        channel = self._channels.get(service)
        if channel is None:
            channel = self.open(self.settings.address(service))
            self._channels[service] = channel
        return channel

    def open(self, target: str) -> grpc.aio.Channel:
        """A new mTLS channel to an explicit `host:port`."""
        credentials = tls.channel_credentials(self.settings.certs, self.identity)
        options = [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", retry_service_config()),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.max_receive_message_length", 32 * 1024 * 1024),
        ]
        if not self.intercepted:
            return grpc.aio.secure_channel(target, credentials, options=options)
        tracing = telemetry.client_interceptors() if self.settings.tracing else []
        interceptors = [_ContextMetadata(), _StreamContextMetadata(), *tracing]
        return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)

    async def close(self) -> None:
        """Close every channel."""
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()
