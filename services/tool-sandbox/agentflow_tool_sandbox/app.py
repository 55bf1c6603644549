"""The tool-sandbox service: its database, the tool catalog, the process backend and ToolService."""

from __future__ import annotations

import logging

import grpc
from agentflow.tools.v1 import mcp_pb2, mcp_pb2_grpc, tools_pb2, tools_pb2_grpc
from agentflow_runtime.db import Database
from agentflow_runtime.server import Runtime
from agentflow_runtime.settings import Settings

from agentflow_tool_sandbox.backend import Runner
from agentflow_tool_sandbox.bwrap import BwrapConfig, BwrapRunner, bwrap_path
from agentflow_tool_sandbox.catalog import load_catalog
from agentflow_tool_sandbox.egress import EgressProxy
from agentflow_tool_sandbox.executions import Executions
from agentflow_tool_sandbox.executor import UNSAFE_WARNING, ProcessBackendConfig, ProcessRunner
from agentflow_tool_sandbox.mcp import store as mcp_store
from agentflow_tool_sandbox.mcp.bridge_servicer import McpBridgeServicer
from agentflow_tool_sandbox.mcp.catalog import load_servers
from agentflow_tool_sandbox.mcp.destinations import AllowedHosts
from agentflow_tool_sandbox.mcp.policy import ServerPolicy
from agentflow_tool_sandbox.mcp.servers import McpServers
from agentflow_tool_sandbox.mcp.servicer import McpServerServicer
from agentflow_tool_sandbox.mcp.stdio_launch import LaunchConfig
from agentflow_tool_sandbox.probe import probe
from agentflow_tool_sandbox.registry import Registry
from agentflow_tool_sandbox.servicer import ToolServicer
from agentflow_tool_sandbox.store import ExecutionStore, ToolStore, metadata
from agentflow_tool_sandbox.validation import Delegation

log = logging.getLogger("agentflow.tool_sandbox")

SERVICE_NAMES = (
    tools_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name,
    mcp_pb2.DESCRIPTOR.services_by_name["McpServerService"].full_name,
    mcp_pb2.DESCRIPTOR.services_by_name["McpBridgeService"].full_name,
)


class ToolSandboxService:
    """Serves ToolService; loads `catalog/tools/*.yaml` at start (an invalid catalog stops the start)."""

    name = "tool-sandbox"
    service_names = SERVICE_NAMES

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._db = Database.for_service(settings, self.name)
        self._executions: Executions | None = None
        self._mcp: McpServers | None = None
        self._egress: EgressProxy | None = None

    async def start(self, server: grpc.aio.Server, runtime: Runtime) -> None:
        catalog = load_catalog(self._settings.catalog_dir / "tools")
        log.info("loaded tool catalog", extra={"fields": {"tools": [t.tool_id for t in catalog]}})
        mcp_catalog = load_servers(self._settings.catalog_dir / "mcp")
        # What API-registered tools and MCP servers may use of this host: one delegation for both.
        delegation = Delegation(
            path_roots=tuple(self._settings.sandbox_api_path_roots), env=tuple(self._settings.sandbox_api_env)
        )
        allowed_hosts = AllowedHosts.parse(self._settings.mcp_api_allowed_hosts)
        await self._db.create_all(metadata)
        await self._db.create_all(mcp_store.metadata)
        # The allow-listing egress proxy: the only network a sandboxed tool gets (see egress.py).
        self._egress = EgressProxy(runtime.audit, root=self._settings.data_dir / "egress")
        runner = await self._runner()
        if isinstance(runner, BwrapRunner) and runner.unavailable is not None:
            runtime.not_serving.add(tools_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name)
        sandbox = runner if isinstance(runner, BwrapRunner) else None  # stdio MCP servers run sandboxed too
        launch = LaunchConfig(scratch_root=self._settings.data_dir / "mcp-scratch", sandbox=sandbox)
        policy = ServerPolicy(delegation=delegation, allowed_hosts=allowed_hosts)
        mcp = self._mcp = McpServers(mcp_store.McpStore(self._db.engine), mcp_catalog, launch, policy=policy)
        registry = Registry(ToolStore(self._db.engine), catalog, imported=mcp, delegation=delegation)
        executions = self._executions = Executions(runner, ExecutionStore(self._db.engine), mcp=mcp)
        tools = ToolServicer(registry, executions, runtime.audit)
        tools_pb2_grpc.add_ToolServiceServicer_to_server(tools, server)
        mcp_pb2_grpc.add_McpServerServiceServicer_to_server(McpServerServicer(mcp, runtime.audit), server)
        mcp_pb2_grpc.add_McpBridgeServiceServicer_to_server(
            McpBridgeServicer(registry, tools.ExecuteTool), server
        )
        mcp.start()

    async def _runner(self) -> Runner:
        """The sandbox backend: bubblewrap, probed (fails closed); the process backend only on request."""
        settings = self._settings
        if settings.sandbox_backend == "process":
            log.warning(UNSAFE_WARNING)
            config = ProcessBackendConfig(scratch_root=settings.data_dir / "tool-scratch", warn=True)
            return ProcessRunner(config)
        found = bwrap_path(settings.sandbox_bwrap)
        runner = BwrapRunner(BwrapConfig(bwrap=found or settings.sandbox_bwrap, egress=self._egress))
        problem: str | None
        if found is None:
            problem = f"bubblewrap ({settings.sandbox_bwrap!r}) is not installed: run `make install`"
            log.error(
                "sandbox unavailable: refusing to execute tools", extra={"fields": {"problem": problem}}
            )
        else:
            problem = await probe(runner)
        runner.mark_available(problem)
        return runner

    async def stop(self) -> None:
        if self._executions is not None:
            await self._executions.close(self._settings.drain_seconds)
        if self._mcp is not None:
            await self._mcp.close()
        await self._db.dispose()


def build(settings: Settings) -> ToolSandboxService:
    """The tool sandbox for `af serve tool-sandbox`."""
    return ToolSandboxService(settings)
