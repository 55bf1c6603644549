"""Service bootstrap: mTLS gRPC server with health, reflection, interceptors, metrics and graceful drain."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import uvloop
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentflow_runtime import logs, metrics, telemetry, tls
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.clients import Channels
from agentflow_runtime.interceptor import RuntimeInterceptor
from agentflow_runtime.settings import Settings

log = logging.getLogger("agentflow.server")


@dataclass
class Runtime:
    """What the runtime gives a service: its settings, channels to the others, and the audit sink."""

    settings: Settings
    channels: Channels
    audit: AuditSink
    not_serving: set[str] = field(default_factory=set)
    """Protobuf services the service found it cannot serve while starting (they, and the server as a
    whole, report NOT_SERVING; e.g. the tool sandbox when it cannot isolate)."""


class Service(Protocol):
    """A mesh service: it names itself and its protobuf services, then starts on a server."""

    name: str
    service_names: Sequence[str]

    async def start(self, server: grpc.aio.Server, runtime: Runtime) -> None: ...

    async def stop(self) -> None: ...


class RunningService:
    """A started service: its server, health state and runtime; `stop()` drains it."""

    def __init__(self, service: Service, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.channels = Channels(settings, service.name)
        audit_channel = None if service.name == "audit" else self.channels.get("audit")
        self.runtime = Runtime(settings, self.channels, AuditSink(audit_channel))
        tracing = [telemetry.server_interceptor()] if settings.tracing else []
        self.server = grpc.aio.server(
            interceptors=[*tracing, RuntimeInterceptor()],
            options=[
                ("grpc.max_receive_message_length", 32 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health_aio.HealthServicer()
        self.port = 0

    async def start(self) -> None:
        """Start serving; health turns SERVING only once the service has started."""
        await self.service.start(self.server, self.runtime)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [*self.service.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, self.server)
        credentials = tls.server_credentials(self.settings.certs, self.service.name)
        address = self.settings.address(self.service.name)
        self.port = self.server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"could not bind {address}")
        await self.server.start()
        self.runtime.audit.start()
        if self.settings.metrics_enabled:
            metrics.serve_metrics(self.settings.host, self.settings.metrics_port(self.service.name))
        failing = self.runtime.not_serving
        for name in ("", *self.service.service_names):
            serving = name not in failing and not (name == "" and failing)
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            await self.health.set(name, status)
        log.info("serving", extra={"fields": {"address": address, "services": list(names)}})

    async def stop(self) -> None:
        """Drain: report NOT_SERVING, finish in-flight calls within the grace period, then close."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.drain_seconds)
        await self.service.stop()
        await self.runtime.audit.close()
        await self.channels.close()
        log.info("stopped")


async def run_until_signalled(service: Service, settings: Settings) -> None:
    """Run a service until SIGTERM or SIGINT, then drain it."""
    running = RunningService(service, settings)
    await running.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received; draining")
    await running.stop()


def serve(service: Service, settings: Settings) -> None:
    """Configure logging and tracing, then run `service` until signalled."""
    # A crash in native code (a driver, grpc, uvloop) leaves every thread's Python stack on stderr, which the
    # supervisor keeps in the service's log, instead of a bare exit status.
    faulthandler.enable()
    logs.configure(service.name, settings.log_level)
    telemetry.configure(service.name)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_until_signalled(service, settings))
