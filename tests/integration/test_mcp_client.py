"""MCP servers written with the SDK, registered through the REST edge; their tools run from workflows.

Real processes throughout: the mesh, an HTTP MCP server, and a stdio MCP server started by the tool-sandbox.
The shared mesh's operator lets API registrations use 127.0.0.1 and the demo script's directory
(`tests.support.MESH_ENV`); a small mesh of its own shows that by default they cannot.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import orjson
import pytest
from agentflow.tools.v1 import mcp_pb2, mcp_pb2_grpc
from agentflow_cli import health
from agentflow_cli.localmesh import isolated_settings
from agentflow_cli.supervisor import Mesh
from agentflow_runtime.certs import CLIENT_IDENTITY, init_dev_certs
from agentflow_runtime.clients import Channels
from agentflow_runtime.context import PRINCIPAL_KEY, ROLE_KEY, TENANT_KEY
from agentflow_runtime.errors import from_status
from agentflow_runtime.settings import SERVICES, Settings
from grpc_status import rpc_status

from tests.mcp_servers.running import HttpDemoServer, free_port, stdio_command
from tests.support import REPO, auth

WAIT = 90.0
GRANT = {"roles": ["developer", "admin"]}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def register(edge: str, token: str, server_id: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = httpx.post(
        f"{edge}/v1/mcpServers", params={"mcpServerId": server_id}, headers=auth(token), json=body, timeout=60
    )
    assert reply.status_code == 200, reply.text
    created: dict[str, Any] = reply.json()
    return created


def run_workflow(edge: str, token: str, steps_yaml: str, output_yaml: str) -> dict[str, Any]:
    """Create a workflow, run it, follow its events to the end; the finished run with its events."""
    workflow_id = unique("mcp-flow")
    source = f"id: {workflow_id}\nsteps:\n{steps_yaml}\noutput:\n{output_yaml}\n"
    created = httpx.post(f"{edge}/v1/workflows", headers=auth(token), json={"source": source}, timeout=30)
    assert created.status_code == 200, created.text
    started = httpx.post(
        f"{edge}/v1/runs", headers=auth(token), json={"workflow": f"workflows/{workflow_id}"}, timeout=30
    )
    assert started.status_code == 200, started.text
    name = started.json()["name"]
    events = []
    with httpx.stream("GET", f"{edge}/v1/{name}:watch", headers=auth(token), timeout=WAIT) as stream:
        for line in stream.iter_lines():
            if line.strip():
                events.append(orjson.loads(line)["result"])
    run: dict[str, Any] = httpx.get(f"{edge}/v1/{name}", headers=auth(token), timeout=30).json()
    run["events"] = events
    return run


def reason(run: dict[str, Any]) -> str:
    """The ErrorInfo reason of a failed run's error (a google.rpc.Status)."""
    infos = [d for d in run["error"].get("details", []) if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert len(infos) == 1, run["error"]
    return str(infos[0]["reason"])


def audit_events(edge: str, token: str, resource: str, count: int) -> list[dict[str, Any]]:
    """The audit events about `resource`, once there are at least `count` (the sink sends in batches)."""
    deadline = time.monotonic() + WAIT
    while True:
        reply = httpx.get(
            f"{edge}/v1/auditEvents", params={"resource": resource}, headers=auth(token), timeout=30
        )
        assert reply.status_code == 200, reply.text
        events: list[dict[str, Any]] = reply.json().get("auditEvents", [])
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpDemoServer]:
    server = HttpDemoServer(name="http-demo")
    server.start()
    yield server
    server.kill()


def test_stdio_and_http_tools_run_from_a_workflow_and_are_audited(
    edge: str, token: str, http_server: HttpDemoServer
) -> None:
    local, remote = unique("local"), unique("remote")
    stdio = register(edge, token, local, {"stdio": {"command": stdio_command()}, "access": GRANT})
    assert stdio["state"] == "MCP_SERVER_STATE_CONNECTED", stdio
    assert f"tools/{local}--add" in stdio["tools"]
    http = register(edge, token, remote, {"http": {"url": http_server.url}, "access": GRANT})
    assert f"tools/{remote}--echo" in http["tools"]
    # the first server's tools keep their names now that a second one is registered
    again = httpx.get(f"{edge}/v1/mcpServers/{local}", headers=auth(token), timeout=30).json()
    assert again["tools"] == stdio["tools"]
    tool = httpx.get(f"{edge}/v1/tools/{remote}--echo", headers=auth(token), timeout=30).json()
    assert tool["origin"] == "mcp"
    assert tool["mcp"] == {"server": f"mcpServers/{remote}", "remoteName": "echo"}
    assert tool["access"]["roles"] == ["developer", "admin"]

    run = run_workflow(
        edge,
        token,
        f"""  - id: sum
    kind: tool
    tool: {local}--add
    arguments: {{a: 20, b: 22}}
  - id: say
    kind: tool
    tool: {remote}--echo
    needs: [sum]
    arguments:
      text: "sum is {{{{ steps.sum.output.sum }}}}"
""",
        "  total: '{{ steps.sum.output.sum }}'\n  said: '{{ steps.say.output.result }}'",
    )
    assert run["state"] == "RUN_STATE_SUCCEEDED", run
    assert str(run["output"]["total"]) == "42"
    assert run["output"]["said"] == "http-demo: sum is 42"
    outputs = [e for e in run["events"] if e["type"] == "RUN_EVENT_TYPE_TOOL_OUTPUT"]
    assert any("sum is 42" in orjson.dumps(e).decode() for e in outputs)
    audited = audit_events(edge, token, f"tools/{remote}--echo", 1)
    mine = [e for e in audited if e["details"].get("run") == run["name"]]
    assert mine and mine[0]["action"] == "tool.execute" and mine[0]["outcome"] == "ok"


def test_imported_tools_are_denied_until_granted(edge: str, token: str, http_server: HttpDemoServer) -> None:
    server_id = unique("ungranted")
    register(edge, token, server_id, {"http": {"url": http_server.url}})
    run = run_workflow(
        edge,
        token,
        f"  - id: one\n    kind: tool\n    tool: {server_id}--add\n    arguments: {{a: 1, b: 2}}\n",
        "  x: '{{ steps.one.output.sum }}'",
    )
    assert run["state"] == "RUN_STATE_FAILED"
    assert reason(run) == "TOOL_ACCESS_DENIED", run["error"]
    denied = audit_events(edge, token, f"tools/{server_id}--add", 1)
    assert [e["outcome"] for e in denied] == ["denied"]


def test_killed_server_opens_the_breaker_and_a_restart_recovers(edge: str, token: str) -> None:
    server = HttpDemoServer(name="flaky")
    server.start()
    try:
        server_id = unique("flaky")
        register(
            edge,
            token,
            server_id,
            {
                "http": {"url": server.url},
                "access": GRANT,
                "retry": {"maxAttempts": 2, "initialBackoffSeconds": 0.05},
                "circuitBreaker": {"failureThreshold": 2, "openSeconds": 2},
            },
        )
        step = f"  - id: one\n    kind: tool\n    tool: {server_id}--add\n    arguments: {{a: 1, b: 2}}\n"
        output = "  x: '{{ steps.one.output.sum }}'"
        assert run_workflow(edge, token, step, output)["state"] == "RUN_STATE_SUCCEEDED"
        server.kill()
        reasons = [reason(run_workflow(edge, token, step, output)) for _ in range(3)]
        assert reasons == ["MCP_SERVER_UNAVAILABLE", "MCP_SERVER_UNAVAILABLE", "MCP_CIRCUIT_OPEN"], reasons
        got = httpx.get(f"{edge}/v1/mcpServers/{server_id}", headers=auth(token), timeout=30).json()
        assert got["circuitState"] == "CIRCUIT_STATE_OPEN"
        assert "connection refused" in got["lastError"]
        server.start()
        deadline = time.monotonic() + WAIT
        while True:  # the circuit half-opens after openSeconds; the trial call then closes it
            run = run_workflow(edge, token, step, output)
            if run["state"] == "RUN_STATE_SUCCEEDED" or time.monotonic() > deadline:
                break
            assert reason(run) == "MCP_CIRCUIT_OPEN", run["error"]
            time.sleep(0.5)
        assert run["state"] == "RUN_STATE_SUCCEEDED", run
        got = httpx.get(f"{edge}/v1/mcpServers/{server_id}", headers=auth(token), timeout=30).json()
        assert got["circuitState"] == "CIRCUIT_STATE_CLOSED"
    finally:
        server.kill()


def violations(reply: httpx.Response) -> dict[str, str]:
    details: list[dict[str, Any]] = reply.json()["details"]
    return {v["field"]: v["description"] for d in details for v in d.get("fieldViolations", [])}


def refused(edge: str, token: str, body: dict[str, Any]) -> dict[str, str]:
    """Register `body`; it must be refused (400), and nothing stored. Its field violations."""
    server_id = unique("refused")
    reply = httpx.post(
        f"{edge}/v1/mcpServers", params={"mcpServerId": server_id}, headers=auth(token), json=body, timeout=60
    )
    assert reply.status_code == 400, reply.text
    gone = httpx.get(f"{edge}/v1/mcpServers/{server_id}", headers=auth(token), timeout=30)
    assert gone.status_code == 404, gone.text
    return violations(reply)


def test_a_registration_gets_no_secret_host_path_or_address_unless_the_operator_allows_it(
    edge: str, token: str, settings: Settings
) -> None:
    """Only 127.0.0.1 and the demo script's directory are allowed in this mesh (tests.support.MESH_ENV)."""
    secrets = refused(
        edge,
        token,
        {"http": {"url": "https://mcp.example.com/mcp", "headersFromEnv": {"X": "AF_JWT_SECRET"}}},
    )
    assert secrets == {
        "mcp_server.http.headers_from_env.X": "`AF_*` variables configure the service and are never passed"
    }
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        f"http://localhost:{free_port()}/mcp",
        f"http://127.0.0.2:{free_port()}/mcp",
        "http://[::1]/mcp",
    ):
        (problem,) = refused(edge, token, {"http": {"url": url}}).items()
        assert problem[0] == "mcp_server.http.url"
        assert "is not reachable for API-registered servers" in problem[1], problem
    data_file = next(p for p in settings.data_dir.rglob("*") if p.is_file())
    stdio = {"command": ["{python}", "-c", "print(1)", str(data_file)], "passEnv": ["HOME"]}
    assert set(refused(edge, token, {"stdio": stdio})) == {
        "mcp_server.stdio.command[3]",
        "mcp_server.stdio.pass_env[0]",
    }


@pytest.fixture(scope="module")
def default_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """audit + tool-sandbox as real processes, configured as shipped: nothing allowed to API servers."""
    data_dir = tmp_path_factory.mktemp("mcp-default-mesh")
    settings, env = isolated_settings(data_dir, REPO / "catalog")
    mesh = Mesh(settings, env=env)
    init_dev_certs(settings.certs, [*SERVICES, CLIENT_IDENTITY])
    try:
        for name in ("audit", "tool-sandbox"):
            mesh.start_service(name)
        statuses = asyncio.run(health.wait_serving(settings, ["audit", "tool-sandbox"], WAIT))
        assert set(statuses.values()) == {"SERVING"}, f"{statuses}; logs in {mesh.log_dir}"
        yield settings
    finally:
        mesh.down()


def test_without_the_operators_allowance_a_loopback_server_is_refused(
    default_sandbox: Settings, http_server: HttpDemoServer
) -> None:
    metadata = ((TENANT_KEY, "acme"), (PRINCIPAL_KEY, "mallory"), (ROLE_KEY, "developer"))

    async def create(server: mcp_pb2.McpServer) -> grpc.aio.AioRpcError:
        channels = Channels(default_sandbox, "gateway")
        try:
            stub = mcp_pb2_grpc.McpServerServiceStub(channels.get("tool-sandbox"))
            request = mcp_pb2.CreateMcpServerRequest(mcp_server_id=unique("local"), mcp_server=server)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.CreateMcpServer(request, metadata=metadata, timeout=60)
            listed = await stub.ListMcpServers(mcp_pb2.ListMcpServersRequest(), metadata=metadata, timeout=30)
            assert list(listed.mcp_servers) == []
            return failed.value
        finally:
            await channels.close()

    error = asyncio.run(create(mcp_pb2.McpServer(http=mcp_pb2.McpHttpTransport(url=http_server.url))))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = violations_of(error)
    assert violation == (
        "mcp_server.http.url",
        f"127.0.0.1:{http_server.port} is not reachable for API-registered servers: "
        "127.0.0.1 is a loopback address",
    )
    stdio = mcp_pb2.McpStdioTransport(command=stdio_command())  # its directory is not delegated here
    error = asyncio.run(create(mcp_pb2.McpServer(stdio=stdio)))
    assert [f for f, _ in violations_of(error)] == ["mcp_server.stdio.command[1]"]


def violations_of(error: Any) -> list[tuple[str, str]]:
    """The field violations in a failed gRPC call's google.rpc.Status."""
    status = rpc_status.from_call(error)
    assert status is not None
    return from_status(status).violations
