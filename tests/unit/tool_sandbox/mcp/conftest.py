from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from agentflow_tool_sandbox.mcp.destinations import AllowedHosts
from agentflow_tool_sandbox.mcp.policy import ServerPolicy
from agentflow_tool_sandbox.mcp.servers import McpServers
from agentflow_tool_sandbox.mcp.stdio_launch import LaunchConfig
from agentflow_tool_sandbox.mcp.store import McpStore, metadata
from agentflow_tool_sandbox.validation import Delegation
from sqlalchemy.ext.asyncio import create_async_engine

from tests.mcp_servers.running import DEMO_SERVER, HttpDemoServer

DEMO_POLICY = ServerPolicy(
    delegation=Delegation(path_roots=(str(DEMO_SERVER.parent),)),
    allowed_hosts=AllowedHosts.parse(["127.0.0.1"]),
)
"""What the operator lets the tests' API-registered servers use: the demo server's script, on loopback."""


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[McpServers]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'mcp.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    hub = McpServers(
        McpStore(engine), [], LaunchConfig(scratch_root=tmp_path / "scratch"), policy=DEMO_POLICY
    )
    yield hub
    await hub.close()
    await engine.dispose()


@pytest.fixture
def http_server() -> Iterator[HttpDemoServer]:
    server = HttpDemoServer()
    server.start()
    yield server
    server.kill()
