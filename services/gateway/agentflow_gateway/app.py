"""The gateway service: REST/JSON and MCP (`/mcp`) edge on `settings.http_port` (uvicorn), gRPC pass-through
on its gRPC port.

Started by the runtime (`agentflow_runtime.server.serve`), which owns the gRPC server, mTLS, health and
reflection; `start()` adds the pass-through handler to that server and runs uvicorn in the same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator, Sequence

import grpc
import uvicorn
from agentflow_runtime import descriptors
from agentflow_runtime.clients import Channels
from agentflow_runtime.server import Runtime
from agentflow_runtime.settings import DEV_JWT_SECRET, Settings

from agentflow_gateway.auth import Authenticator, HS256Verifier, Verifier
from agentflow_gateway.backends import Backends, ChannelSource
from agentflow_gateway.http import GatewayApp
from agentflow_gateway.mcp_bridge import McpBridge
from agentflow_gateway.mcp_edge import McpEdge
from agentflow_gateway.mcp_runs import RunTools
from agentflow_gateway.passthrough import PassthroughHandler
from agentflow_gateway.routes import build_methods, build_routes

__all__ = ["GatewayService", "build"]

log = logging.getLogger("agentflow.gateway")


class _EdgeServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the runtime handles SIGTERM and drains in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class GatewayService:
    """The edge of the mesh (see the module docstring)."""

    name = "gateway"

    def __init__(
        self, settings: Settings, *, verifier: Verifier | None = None, channels: ChannelSource | None = None
    ) -> None:
        self.settings = settings
        self.service_names: Sequence[str] = descriptors.public_services()
        self.methods = build_methods(self.service_names)
        self.routes = build_routes(self.methods)
        self.authenticator = Authenticator(verifier or HS256Verifier(settings.jwt_secret))
        self.http_port = settings.http_port
        self._server: _EdgeServer | None = None
        self._given_channels = channels
        self._channels: Channels | None = None
        self._task: asyncio.Task[None] | None = None
        self._mcp: McpEdge | None = None

    async def start(self, server: grpc.aio.Server, runtime: Runtime) -> None:
        if self.settings.jwt_secret == DEV_JWT_SECRET:
            log.warning("the REST edge accepts tokens signed with the public dev secret; set AF_JWT_SECRET")
        # The edge sets tenant/identity metadata and forwards `traceparent` itself: plain channels skip
        # the client interceptors, which cost it ~0.3 ms of CPU per call (docs/benchmarks.md).
        source = self._given_channels
        if source is None:
            source = self._channels = Channels(self.settings, self.name, intercepted=False)
        backends = Backends(source)
        server.add_generic_rpc_handlers((PassthroughHandler(self.methods, backends, self.authenticator),))
        runs = RunTools(backends, self.methods)
        self._mcp = McpEdge(self.authenticator, McpBridge(source), runs)
        await self._mcp.start()
        app = GatewayApp(self.routes, backends, self.authenticator, mcp=self._mcp)
        config = uvicorn.Config(
            app,
            host=self.settings.host,
            port=self.settings.http_port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=max(1, int(self.settings.drain_seconds)),
        )
        self._server = _EdgeServer(config)
        self._task = asyncio.create_task(self._server.serve(), name="gateway-http")
        while not self._server.started:
            if self._task.done():
                # uvicorn reports a bind failure by exiting; surface it as the error it is.
                with contextlib.suppress(SystemExit, Exception):
                    self._task.result()
                raise OSError(f"REST edge could not listen on {self.settings.host}:{self.settings.http_port}")
            await asyncio.sleep(0.01)
        sockets = [s for srv in self._server.servers for s in (srv.sockets or ())]
        if sockets:
            self.http_port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Drain the REST edge (in-flight requests finish), then close the channels they used."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await self._task
        self._server = None
        self._task = None
        if self._mcp is not None:
            await self._mcp.stop()
            self._mcp = None
        if self._channels is not None:
            await self._channels.close()
            self._channels = None


def build(settings: Settings) -> GatewayService:
    """The gateway service, ready for `agentflow_runtime.server.serve`."""
    return GatewayService(settings)
