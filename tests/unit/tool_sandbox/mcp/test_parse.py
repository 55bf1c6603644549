"""Registrations from YAML documents and API messages: defaults, every problem reported, access."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentflow.tools.v1 import mcp_pb2
from agentflow_runtime.errors import InvalidArgument
from agentflow_tool_sandbox.catalog import CatalogError
from agentflow_tool_sandbox.mcp.catalog import load_servers
from agentflow_tool_sandbox.mcp.convert import server_from_proto
from agentflow_tool_sandbox.mcp.documents import spec_from_document, spec_to_document
from agentflow_tool_sandbox.mcp.model import HttpTransport, StdioTransport
from agentflow_tool_sandbox.mcp.parse import parse_server

REPO = Path(__file__).resolve().parents[4]


def test_defaults_and_round_trip() -> None:
    spec, problems = parse_server({"id": "w", "http": {"url": "http://127.0.0.1:1/mcp"}})
    assert problems == [] and spec is not None
    assert spec.timeout_seconds == 30 and spec.retry.max_attempts == 3
    assert spec.breaker.failure_threshold == 5 and spec.access.roles == ()
    assert isinstance(spec.transport, HttpTransport)
    assert spec_from_document(spec_to_document(spec), "w") == spec


def test_every_problem_is_reported() -> None:
    spec, problems = parse_server(
        {
            "id": "Bad--id",
            "stdio": {"command": []},
            "http": {"url": "ftp://x"},
            "timeout_seconds": -1,
            "retry": {"max_attempts": 100},
            "access": {"roles": ["root"]},
            "extra": 1,
        }
    )
    assert spec is None
    fields = {f for f, _ in problems}
    assert {"id", "transport", "timeout_seconds", "retry.max_attempts", "access.roles", "extra"} <= fields


def test_api_message_goes_through_the_same_checks() -> None:
    message = mcp_pb2.McpServer(
        stdio=mcp_pb2.McpStdioTransport(command=["{python}", "server.py"], pass_env=["TOKEN"]),
        access=mcp_pb2.ToolAccess(roles=["developer"]),
        circuit_breaker=mcp_pb2.McpCircuitBreaker(failure_threshold=2),
    )
    spec = server_from_proto("local", message)
    assert isinstance(spec.transport, StdioTransport) and spec.transport.pass_env == ("TOKEN",)
    assert spec.breaker.failure_threshold == 2 and spec.access.roles == ("developer",)
    with pytest.raises(InvalidArgument) as bad:
        server_from_proto("Nope", mcp_pb2.McpServer())
    assert {f for f, _ in bad.value.violations} == {"mcp_server_id", "mcp_server.transport"}


def test_catalog_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("id: a\nstdio:\n  command: ['{server_dir}/run']\n")
    (tmp_path / "b.yaml").write_text("id: a\nhttp:\n  url: http://h/mcp\n")
    with pytest.raises(CatalogError) as err:
        load_servers(tmp_path)
    assert err.value.problems == [("b.yaml:id", "duplicate of the server in a.yaml")]
    (tmp_path / "b.yaml").unlink()
    (server,) = load_servers(tmp_path)
    assert isinstance(server.transport, StdioTransport)
    assert server.transport.command == (f"{tmp_path.resolve()}/run",) and server.origin == "catalog"


def test_the_repository_catalog_loads() -> None:
    assert all(s.origin == "catalog" for s in load_servers(REPO / "catalog" / "mcp"))
