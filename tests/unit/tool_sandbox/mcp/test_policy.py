"""What API-registered MCP servers may use: no `AF_*` variable ever, the operator's delegation for paths and
variables (the API tools' rule), public addresses only unless allowed. Pure checks; no traffic is sent."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from agentflow_tool_sandbox.mcp.destinations import AllowedHosts, address_problem, destination_problem
from agentflow_tool_sandbox.mcp.documents import spec_from_document
from agentflow_tool_sandbox.mcp.model import HttpTransport, ServerSpec, StdioTransport
from agentflow_tool_sandbox.mcp.parse import parse_server
from agentflow_tool_sandbox.mcp.policy import ServerPolicy
from agentflow_tool_sandbox.spec import ORIGIN_CATALOG, Permissions
from agentflow_tool_sandbox.validation import Delegation, validate_permissions

NOTHING = ServerPolicy()


def http(url: str, **from_env: str) -> ServerSpec:
    return ServerSpec(server_id="s", transport=HttpTransport(url=url, headers_from_env=from_env))


def stdio(*command: str, pass_env: tuple[str, ...] = ()) -> ServerSpec:
    return ServerSpec(server_id="s", transport=StdioTransport(command=command, pass_env=pass_env))


def fields(problems: list[tuple[str, str]]) -> set[str]:
    return {f for f, _ in problems}


def test_af_variables_are_refused_at_parse_whoever_registers() -> None:
    for origin in ("api", ORIGIN_CATALOG):
        spec, problems = parse_server(
            {"id": "x", "http": {"url": "https://h/mcp", "headers_from_env": {"X-Key": "AF_JWT_SECRET"}}},
            origin=origin,
        )
        assert spec is None
        assert problems == [
            (
                "http.headers_from_env.X-Key",
                "`AF_*` variables configure the service and are never passed",
            )
        ]
        spec, problems = parse_server(
            {"id": "x", "stdio": {"command": ["srv"], "pass_env": ["TOKEN", "af_database_url", "no-good"]}},
            origin=origin,
        )
        assert spec is None and fields(problems) == {"stdio.pass_env[1]", "stdio.pass_env[2]"}


def test_a_registration_stored_before_the_check_still_loads() -> None:
    document = {"http": {"url": "https://h/mcp", "headers_from_env": {"X": "AF_JWT_SECRET"}}}
    spec = spec_from_document(document, "old")  # listed; connecting refuses it (test_refusals)
    assert isinstance(spec.transport, HttpTransport)


def test_api_servers_get_only_delegated_variables() -> None:
    policy = ServerPolicy(delegation=Delegation(env=("WEATHER_TOKEN",)))
    assert policy.problems(http("https://h/mcp", Authorization="WEATHER_TOKEN")) == []
    refused = policy.problems(http("https://h/mcp", Authorization="HOME", X="AF_JWT_SECRET"))
    assert refused == [
        (
            "http.headers_from_env.Authorization",
            "not a variable the operator lets API-registered tools and MCP servers receive",
        ),
        ("http.headers_from_env.X", "`AF_*` variables configure the service and are never passed"),
    ]
    assert fields(policy.problems(stdio("srv", pass_env=("WEATHER_TOKEN", "PATH")))) == {"stdio.pass_env[1]"}
    catalog = http("https://h/mcp", Authorization="HOME")
    assert NOTHING.problems(ServerSpec("s", catalog.transport, origin=ORIGIN_CATALOG)) == []


def test_one_rule_for_api_tools_and_api_servers(tmp_path: Path) -> None:
    """The same delegation refuses the same path and variable to a tool profile and to a server."""
    delegation = Delegation(path_roots=(str(tmp_path / "granted"),), env=("TOKEN",))
    tool = validate_permissions(
        Permissions(read_only_paths=("/srv/.agentflow",), env=("HOME",)), "profile", delegation
    )
    server = ServerPolicy(delegation=delegation).problems(
        stdio("{python}", "/srv/.agentflow/worker.db", pass_env=("HOME",))
    )
    (_, tool_path), (_, tool_env) = tool
    (_, server_path), (_, server_env) = server
    assert server_path.endswith(tool_path) and server_env == tool_env


def test_api_stdio_servers_read_only_delegated_directories(tmp_path: Path) -> None:
    granted = tmp_path / "granted"
    (granted / "srv").mkdir(parents=True)
    script = granted / "srv" / "server.py"
    script.write_text("")
    (granted / "escape").symlink_to(tmp_path)  # inside the root, leading out of it
    policy = ServerPolicy(delegation=Delegation(path_roots=(str(granted),)))
    assert policy.problems(stdio("{python}", str(script), "--flag")) == []
    refused = policy.problems(
        stdio(
            "{python}",
            "-c",
            "print(open(__import__('sys').argv[1]).read())",
            "/srv/.agentflow/worker.db",
            f"{granted}/../elsewhere/x",
            f"{granted}/escape/secret.txt",
            "/worker.db",
        )
    )
    assert fields(refused) == {f"stdio.command[{i}]" for i in (3, 4, 5, 6)}
    problems = dict(refused)
    assert problems["stdio.command[3]"] == (
        "/srv/.agentflow (what the server would read): not below a path the operator lets "
        "API-registered tools and MCP servers use"
    )
    assert f"leads to {tmp_path}" in problems["stdio.command[5]"]
    assert "the whole host filesystem" in problems["stdio.command[6]"]
    assert fields(NOTHING.problems(stdio("{python}", str(script)))) == {"stdio.command[1]"}
    catalog = stdio("{python}", "-c", "x", "/srv/.agentflow/worker.db")
    assert NOTHING.problems(ServerSpec("s", catalog.transport, origin=ORIGIN_CATALOG)) == []


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("100.64.0.1", "not a public"),
        ("fec0::1", "not a public"),
    ],
)
def test_addresses_an_api_server_may_not_be_on(address: str, kind: str) -> None:
    problem = address_problem(ipaddress.ip_address(address))
    assert problem is not None and kind in problem


def test_public_addresses_pass() -> None:
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"):
        assert address_problem(ipaddress.ip_address(address)) is None


def test_literal_urls_are_refused_without_resolving() -> None:
    for url in (
        "http://127.0.0.1:8000/mcp",
        "http://169.254.169.254/latest/meta-data/",
        "https://[::1]/mcp",
        "http://10.0.0.5/mcp",
        "http://[::ffff:7f00:1]/mcp",
    ):
        (problem,) = NOTHING.problems(http(url))
        assert problem[0] == "http.url" and "is not reachable for API-registered servers" in problem[1], url
    assert NOTHING.problems(http("https://93.184.216.34/mcp")) == []


async def test_names_are_resolved_and_every_address_checked() -> None:
    # localhost and the numeric forms the C resolver accepts all land on loopback
    for url in ("http://localhost:8000/mcp", "http://2130706433/mcp", "http://127.1/mcp"):
        (problem,) = await NOTHING.check(http(url))
        assert problem[0] == "http.url" and "127.0.0.1 is a loopback address" in problem[1], url
    assert await destination_problem("localhost", 80, AllowedHosts.parse(["localhost"])) is None


async def test_the_operator_allows_hosts_or_host_ports() -> None:
    policy = ServerPolicy(allowed_hosts=AllowedHosts.parse(["127.0.0.1:8000", "[::1]", "LocalHost"]))
    assert await policy.check(http("http://127.0.0.1:8000/mcp")) == []
    assert fields(await policy.check(http("http://127.0.0.1:8001/mcp"))) == {"http.url"}
    assert await policy.check(http("http://[::1]:9/mcp")) == []
    assert await policy.check(http("http://localhost:1/mcp")) == []
    for bad in ("http://x", "a b", "h/path", ""):
        with pytest.raises(ValueError, match="mcp_api_allowed_hosts"):
            AllowedHosts.parse([bad])
