from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from agentflow_tool_sandbox.mcp.servers import McpServers
from agentflow_tool_sandbox.mcp.stdio_launch import LaunchConfig
from agentflow_tool_sandbox.mcp.store import McpStore, metadata
from sqlalchemy.ext.asyncio import create_async_engine

from tests.mcp_servers.running import HttpDemoServer


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[McpServers]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'mcp.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    hub = McpServers(McpStore(engine), [], LaunchConfig(scratch_root=tmp_path / "scratch"))
    yield hub
    await hub.close()
    await engine.dispose()


@pytest.fixture
def http_server() -> Iterator[HttpDemoServer]:
    server = HttpDemoServer()
    server.start()
    yield server
    server.kill()
