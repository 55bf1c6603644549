"""OpenTelemetry tracing for gRPC servers and clients (W3C trace context travels in metadata)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

_configured = False


def configure(service: str) -> None:
    """Install a tracer provider naming the service (spans to stderr with AF_TRACE_CONSOLE=1)."""
    global _configured  # noqa: PLW0603 - process-wide, set once
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"agentflow-{service}"}))
    if os.environ.get("AF_TRACE_CONSOLE") == "1":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True


def server_interceptor() -> Any:
    """The OpenTelemetry grpc.aio server interceptor."""
    return aio_server_interceptor()  # type: ignore[no-untyped-call]


def client_interceptors() -> Sequence[Any]:
    """The OpenTelemetry grpc.aio client interceptors (inject W3C context into metadata)."""
    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]
