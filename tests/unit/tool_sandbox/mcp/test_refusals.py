"""The policy enforced on the real paths: CreateMcpServer refuses with field violations and stores nothing;
a registration that got in before (stored) or a catalog server naming `AF_*` is refused when connecting;
the HTTP client connects only to checked addresses; a stdio server is not started to read an undelegated
directory. A listening socket on loopback shows that nothing reached it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentflow.tools.v1 import mcp_pb2
from agentflow_runtime import context
from agentflow_runtime.errors import InvalidArgument, Unavailable
from agentflow_tool_sandbox.mcp.destinations import AllowedHosts, DestinationRefused, GuardedTransport
from agentflow_tool_sandbox.mcp.model import HttpTransport, RetryPolicy, ServerSpec
from agentflow_tool_sandbox.mcp.policy import ServerPolicy
from agentflow_tool_sandbox.mcp.servers import McpServers
from agentflow_tool_sandbox.mcp.servicer import McpServerServicer
from agentflow_tool_sandbox.mcp.stdio_launch import LaunchConfig, LaunchRefused, launch
from agentflow_tool_sandbox.mcp.store import McpStore, StoredServer, now
from agentflow_tool_sandbox.spec import ORIGIN_CATALOG
from sqlalchemy.ext.asyncio import create_async_engine

from tests.unit.tool_sandbox.test_servicer import FakeAudit

CTX: Any = None


class Listener:
    """A TCP socket listening on loopback that nobody accepts from: `reached` tells whether anything
    connected to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def reached(self) -> bool:
        self.sock.setblocking(False)
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.sock.close()


def violations(exc: InvalidArgument) -> dict[str, str]:
    return dict(exc.violations)


async def create(servers: McpServers, server_id: str, message: mcp_pb2.McpServer) -> mcp_pb2.McpServer:
    servicer = McpServerServicer(servers, FakeAudit())  # type: ignore[arg-type]
    with context.bound(context.CallContext(tenant="acme", principal="dora", role="developer")):
        request = mcp_pb2.CreateMcpServerRequest(mcp_server_id=server_id, mcp_server=message)
        return await servicer.CreateMcpServer(request, CTX)


@pytest.fixture
def strict(servers: McpServers) -> McpServers:
    """The hub as the service runs it by default: nothing delegated, no host allowed."""
    servers.policy = ServerPolicy()
    return servers


async def test_create_refuses_the_service_secrets_as_headers(strict: McpServers, listener: Listener) -> None:
    message = mcp_pb2.McpServer(
        http=mcp_pb2.McpHttpTransport(
            url="https://mcp.example.com/mcp", headers_from_env={"X": "AF_JWT_SECRET"}
        )
    )
    with pytest.raises(InvalidArgument) as bad:
        await create(strict, "thief", message)
    assert violations(bad.value) == {
        "mcp_server.http.headers_from_env.X": "`AF_*` variables configure the service and are never passed"
    }
    message.http.headers_from_env["X"] = "HOME"  # not AF_, but not delegated either
    with pytest.raises(InvalidArgument) as undelegated:
        await create(strict, "thief", message)
    assert set(violations(undelegated.value)) == {"mcp_server.http.headers_from_env.X"}
    assert await strict.specs("acme") == []


async def test_create_refuses_loopback_link_local_and_private_urls(
    strict: McpServers, listener: Listener
) -> None:
    for url in (listener.url, "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/mcp"):
        with pytest.raises(InvalidArgument) as bad:
            await create(strict, "ssrf", mcp_pb2.McpServer(http=mcp_pb2.McpHttpTransport(url=url)))
        (problem,) = violations(bad.value).items()
        assert problem[0] == "mcp_server.http.url"
        assert "is not reachable for API-registered servers" in problem[1], problem
    assert await strict.specs("acme") == []
    assert not listener.reached()


async def test_create_refuses_an_undelegated_script_directory_and_variable(strict: McpServers) -> None:
    stdio = mcp_pb2.McpStdioTransport(
        command=["{python}", "-c", "print(1)", "/srv/.agentflow/worker.db"], pass_env=["HOME"]
    )
    with pytest.raises(InvalidArgument) as bad:
        await create(strict, "reader", mcp_pb2.McpServer(stdio=stdio))
    assert set(violations(bad.value)) == {"mcp_server.stdio.command[3]", "mcp_server.stdio.pass_env[0]"}
    assert await strict.specs("acme") == []


async def test_an_allowed_host_registers_and_connects(servers: McpServers, http_server: Any) -> None:
    created = await create(
        servers, "ok", mcp_pb2.McpServer(http=mcp_pb2.McpHttpTransport(url=http_server.url))
    )
    assert created.state == mcp_pb2.MCP_SERVER_STATE_CONNECTED
    assert "tools/ok--echo" in created.tools


async def store_directly(servers: McpServers, server_id: str, document: dict[str, Any]) -> ServerSpec:
    """A registration stored before the checks existed (nothing checked on the way in)."""
    document = {**document, "retry": {"max_attempts": 1}}
    assert await servers.store.insert_server(StoredServer("acme", server_id, document, now()))
    return await servers.spec("acme", server_id)


async def test_a_stored_registration_is_refused_when_connecting(
    servers: McpServers, listener: Listener
) -> None:
    secret = await store_directly(
        servers, "old", {"http": {"url": listener.url, "headers_from_env": {"X": "AF_JWT_SECRET"}}}
    )
    assert [s.server_id for s in await servers.specs("acme")] == ["old"]  # still listed
    with pytest.raises(Unavailable) as refused:
        await servers.sync(secret)
    assert "refused by the operator's policy: http.headers_from_env.X: `AF_*`" in str(refused.value)
    assert "AF_" in servers.status(secret).last_error
    servers.policy = ServerPolicy()  # the operator withdrew the host: the next connection is refused
    plain = await store_directly(servers, "plain", {"http": {"url": listener.url}})
    with pytest.raises(Unavailable) as ssrf:
        await servers.sync(plain)
    assert "127.0.0.1 is a loopback address" in str(ssrf.value)
    assert not listener.reached()


async def test_a_catalog_server_naming_af_variables_is_not_connected(
    tmp_path: Path, listener: Listener
) -> None:
    """Built past the parser (which refuses it): the transport refuses again."""
    spec = ServerSpec(
        "cat",
        HttpTransport(url=listener.url, headers_from_env={"X": "AF_JWT_SECRET"}),
        origin=ORIGIN_CATALOG,
        retry=RetryPolicy(max_attempts=1),
        timeout_seconds=5,
    )
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'cat.db'}")
    hub = McpServers(McpStore(engine), [spec], LaunchConfig(scratch_root=tmp_path))
    try:
        with pytest.raises(Unavailable) as refused:
            await hub.sync(replace(spec, tenant=""))
        assert "ReservedVariable" in str(refused.value) and "AF_JWT_SECRET" in str(refused.value)
    finally:
        await hub.close()
        await engine.dispose()
    assert not listener.reached()


async def test_the_http_client_connects_only_to_checked_addresses(listener: Listener) -> None:
    for host in ("127.0.0.1", "localhost"):
        async with httpx.AsyncClient(transport=GuardedTransport(AllowedHosts())) as client:
            with pytest.raises(DestinationRefused, match="loopback"):
                await client.get(f"http://{host}:{listener.port}/mcp")
    assert not listener.reached()
    allowed = GuardedTransport(AllowedHosts.parse([f"127.0.0.1:{listener.port}"]))
    async with httpx.AsyncClient(transport=allowed, timeout=0.5) as client:
        with pytest.raises(httpx.ReadTimeout):  # connected; nobody answers
            await client.get(listener.url)
    assert listener.reached()


async def test_a_stdio_server_is_not_started_to_read_an_undelegated_directory(tmp_path: Path) -> None:
    secret = tmp_path / "data" / "worker.db"
    secret.parent.mkdir()
    secret.write_text("secret")
    policy = ServerPolicy()
    command = ["{python}", "-c", "import sys; print(open(sys.argv[1]).read())", str(secret)]
    with pytest.raises(LaunchRefused, match="not below a path the operator lets"):
        await launch(
            LaunchConfig(scratch_root=tmp_path / "s"), command, {}, readable=policy.script_path_problem
        )
    assert not (tmp_path / "s").exists()  # refused before anything was prepared
