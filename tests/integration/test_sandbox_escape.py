"""Escape attempts against the real tool-sandbox process (bubblewrap, mTLS), each denied and audited.

A small mesh of its own (audit + tool-sandbox as real processes) lets the sandbox be configured for the
test: API-registered tools may be granted paths below one temporary directory. Each attempt is one
ExecuteTool call over mTLS as the worker; the test checks what the tool could do, that nothing it started
survives, and the call's `tool.execute` audit record (read back from the audit service): outcome,
decision, the limit or boundary it hit, resource usage.

Network attempts through the egress proxy are in test_sandbox_egress.py; here: a raw socket and a direct
connection from a tool with no egress in its profile.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from agentflow.audit.v1 import audit_pb2, audit_pb2_grpc
from agentflow.tools.v1 import tools_pb2, tools_pb2_grpc
from agentflow_cli import health
from agentflow_cli.localmesh import isolated_settings
from agentflow_cli.supervisor import Mesh
from agentflow_runtime.certs import CLIENT_IDENTITY, init_dev_certs
from agentflow_runtime.clients import Channels
from agentflow_runtime.context import PRINCIPAL_KEY, ROLE_KEY, TENANT_KEY
from agentflow_runtime.errors import from_status
from agentflow_runtime.protojson import dict_from_struct, py_from_value, struct_from_dict
from agentflow_runtime.settings import SERVICES, Settings
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tests.support import REPO, host_address

SAFETY = 60.0
"""Upper bound for waiting on anything here; a safety net, never an assertion."""
TENANT = "acme"
MARKER = f"af-escape-{uuid.uuid4().hex[:10]}"
"""In every tool's argv (so in every process it forks): how the test finds leftovers on the host."""
SECRET = "host-secret-value-3f9a"
METADATA = ((TENANT_KEY, TENANT), (PRINCIPAL_KEY, "mallory"), (ROLE_KEY, "developer"))

ESCAPE = textwrap.dedent(f"""
    # {MARKER}
    import json, os, socket, sys, time
    args = json.load(sys.stdin)
    attack = args["attack"]
    out = {{"attack": attack}}

    def refused(what, exc):
        out.setdefault("refused", {{}})[what] = exc.strerror or str(exc)
        print(f"{{what}}: {{exc.strerror or exc}}", file=sys.stderr)

    if attack == "write_outside":
        targets = ["/escape", "/usr/escape", "/etc/escape", "/proc/sysrq-trigger"]
        for path in [*targets, args["host_dir"] + "/escape"]:
            try:
                with open(path, "w") as f:
                    f.write("escaped")
                out.setdefault("wrote", []).append(path)
            except OSError as exc:
                refused(path, exc)
        with open("inside.txt", "w") as f:  # the workdir is the one writable place
            f.write("fine")
        out["workdir"] = os.getcwd()
    elif attack == "read_secret":
        try:
            out["read"] = open(args["path"]).read()
        except OSError as exc:
            refused(args["path"], exc)
        out["visible"] = os.path.exists(args["path"])
    elif attack == "plant_symlinks":
        for link, target in args["links"].items():
            os.symlink(target, link)
        out["planted"] = sorted(os.listdir(args["dir"]))
    elif attack == "memory":
        try:
            hog = bytearray(args["bytes"])
            out["allocated"] = len(hog)
        except MemoryError:
            out["refused"] = {{"allocation": "MemoryError"}}
            print("MemoryError: allocation refused", file=sys.stderr)
    elif attack == "fork_bomb":
        leader = os.getpid()
        forked = 0
        while True:
            try:
                if os.fork() == 0:
                    forked = 0  # a child: it forks on too, like any bomb
                    continue
                forked += 1
            except BlockingIOError as exc:
                refused("fork", exc)
                break
        if os.getpid() != leader:
            print("bomb process", flush=True)
            time.sleep(600)  # the sandbox must end every one of them
        out["forked"] = forked
    elif attack == "wall_time":
        if os.fork() == 0:
            os.setsid()  # a new session cannot leave the sandbox's pid namespace
            time.sleep(600)
        print("sleeping", flush=True)
        time.sleep(600)
    elif attack == "print_100mb":
        block = b"x" * (1024 * 1024)
        for _ in range(100):
            sys.stdout.buffer.write(block)
        sys.stdout.flush()
    elif attack == "network":
        try:
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            out["raw"] = True
        except OSError as exc:
            refused("raw socket", exc)
        try:
            socket.create_connection((args["host"], args["port"]), timeout=5).close()
            out["connected"] = True
        except OSError as exc:
            refused(f"connect {{args['host']}}:{{args['port']}}", exc)
        try:
            socket.getaddrinfo("example.com", 443)
            out["resolved"] = True
        except OSError as exc:
            refused("resolve example.com", exc)
    print(json.dumps(out), flush=True)
    sys.exit(1 if out.get("refused") else 0)
""")


@pytest.fixture(scope="module")
def sandbox_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Path]]:
    """audit + tool-sandbox as real processes; API tools may be granted paths below `granted`."""
    data_dir = tmp_path_factory.mktemp("escape-mesh")
    granted = tmp_path_factory.mktemp("escape-granted")
    settings, env = isolated_settings(data_dir, REPO / "catalog")
    env["AF_SANDBOX_API_PATH_ROOTS"] = f'["{granted}"]'
    mesh = Mesh(settings, env=env)
    init_dev_certs(settings.certs, [*SERVICES, CLIENT_IDENTITY])
    try:
        for name in ("audit", "tool-sandbox"):
            mesh.start_service(name)
        statuses = asyncio.run(health.wait_serving(settings, ["audit", "tool-sandbox"], SAFETY))
        assert set(statuses.values()) == {"SERVING"}, f"{statuses}; logs in {mesh.log_dir}"
        yield settings, granted
    finally:
        mesh.down()


def call(settings: Settings, identity: str, coro_factory: Any) -> Any:
    async def go() -> Any:
        channels = Channels(settings, identity)
        try:
            return await coro_factory(channels)
        finally:
            await channels.close()

    return asyncio.run(go())


def register(settings: Settings, **profile: Any) -> str:
    tool_id = f"escape-{uuid.uuid4().hex[:8]}"
    tool = tools_pb2.Tool(
        description="tries to escape its sandbox",
        input_schema=struct_from_dict({"type": "object"}),
        process=tools_pb2.ProcessSpec(command=["{python}", "-c", ESCAPE, MARKER]),
        profile=tools_pb2.ExecutionProfile(**profile),
    )

    async def create(channels: Channels) -> tools_pb2.Tool:
        stub = tools_pb2_grpc.ToolServiceStub(channels.get("tool-sandbox"))
        request = tools_pb2.CreateToolRequest(tool_id=tool_id, tool=tool)
        return await stub.CreateTool(request, metadata=METADATA, timeout=30)

    call(settings, "gateway", create)
    return tool_id


def execute(settings: Settings, tool_id: str, **arguments: Any) -> tuple[bytes, tools_pb2.ToolResult, str]:
    """Run the tool as the worker would; its stdout, result and the run name its audit record carries."""
    run = f"runs/{uuid.uuid4().hex[:12]}"

    async def go(channels: Channels) -> tuple[bytes, tools_pb2.ToolResult]:
        stub = tools_pb2_grpc.ToolServiceStub(channels.get("tool-sandbox"))
        request = tools_pb2.ExecuteToolRequest(
            name=f"tools/{tool_id}", arguments=struct_from_dict(arguments), run=run, step_id="attack"
        )
        stdout = b""
        result = tools_pb2.ToolResult()
        async for response in stub.ExecuteTool(request, metadata=METADATA, timeout=SAFETY):
            if response.HasField("chunk"):
                if response.chunk.stream == tools_pb2.OUTPUT_STREAM_STDOUT:
                    stdout += response.chunk.data
            else:
                result = response.result
        return stdout, result

    stdout, result = call(settings, "worker", go)
    return stdout, result, run


def audit_record(settings: Settings, tool_id: str, run: str | None = None) -> audit_pb2.AuditEvent:
    """The call's `tool.execute` event, once the sandbox's audit sink has sent it; without `run`, the one
    event of a tool called once (a refused call names no run the test knows)."""

    async def go(channels: Channels) -> audit_pb2.AuditEvent:
        stub = audit_pb2_grpc.AuditServiceStub(channels.get("audit"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SAFETY
        while True:
            reply = await stub.ListAuditEvents(
                audit_pb2.ListAuditEventsRequest(resource=f"tools/{tool_id}", page_size=100),
                metadata=((TENANT_KEY, TENANT), (ROLE_KEY, "admin")),
                timeout=30,
            )
            for event in reply.audit_events:
                if event.action == "tool.execute" and (
                    run is None or dict_from_struct(event.details).get("run") == run
                ):
                    return event
            assert loop.time() < deadline, f"no audit record for {run or tool_id}"
            await asyncio.sleep(0.1)

    event: audit_pb2.AuditEvent = call(settings, "client", go)
    return event


def details(event: audit_pb2.AuditEvent) -> dict[str, Any]:
    return dict_from_struct(event.details)


def leftovers() -> list[int]:
    """Processes on this host still running a tool of these tests (matched by MARKER in their argv)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if MARKER.encode() in cmdline and state not in {"Z", "X"}:
            found.append(int(entry))
    return found


def all_gone() -> list[int]:
    """Wait (bounded) until no tool process of these tests is left; what is left after the bound."""
    deadline = time.monotonic() + SAFETY
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def assert_denied(event: audit_pb2.AuditEvent, denial: str) -> dict[str, Any]:
    seen = details(event)
    assert event.outcome == "denied", (event.outcome, seen)
    assert seen["decision"] == "allow" and seen["denial"] == denial
    assert seen["caller"] == "worker" and event.principal == "mallory" and event.tenant == TENANT
    assert seen["step_id"] == "attack" and len(seen["args_digest"]) == 64
    assert seen["wall_seconds"] > 0
    return seen


def metric(settings: Settings, name: str, **labels: str) -> float:
    text = httpx.get(
        f"http://{settings.host}:{settings.metrics_port('tool-sandbox')}/metrics", timeout=10
    ).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and line.split("{", 1)[1].split("}", 1)[0] == wanted:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_writing_outside_the_workdir_is_refused(sandbox_mesh: tuple[Settings, Path]) -> None:
    settings, granted = sandbox_mesh
    tool_id = register(settings)
    _stdout, result, run = execute(settings, tool_id, attack="write_outside", host_dir=str(granted))
    out = py_from_value(result.output)
    assert "wrote" not in out, out
    assert set(out["refused"]) == {
        "/escape",
        "/usr/escape",
        "/etc/escape",
        f"{granted}/escape",
        "/proc/sysrq-trigger",
    }
    assert out["workdir"] == "/sandbox/work"
    assert not (granted / "escape").exists() and not Path("/escape").exists()
    seen = assert_denied(audit_record(settings, tool_id, run), "isolation")
    assert seen["exit_code"] == 1


def test_a_host_secret_outside_the_binds_is_invisible(
    sandbox_mesh: tuple[Settings, Path], tmp_path: Path
) -> None:
    settings, _ = sandbox_mesh
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    tool_id = register(settings)
    stdout, result, run = execute(settings, tool_id, attack="read_secret", path=str(secret))
    out = py_from_value(result.output)
    assert out["visible"] is False and "read" not in out
    assert SECRET.encode() not in stdout and SECRET not in result.stderr
    event = audit_record(settings, tool_id, run)
    assert event.outcome == "failed" and details(event)["decision"] == "allow"
    assert SECRET not in str(event)


def test_a_host_secret_in_a_granted_directory_is_still_unreadable(
    sandbox_mesh: tuple[Settings, Path],
) -> None:
    settings, granted = sandbox_mesh
    shared = granted / "shared"
    shared.mkdir(exist_ok=True)
    shared.chmod(0o755)
    secret = shared / "root-only.txt"
    secret.write_text(SECRET)
    secret.chmod(0o600)  # the host's owner only: the tool runs as a uid of its own
    tool_id = register(settings, read_only_paths=[str(shared)])
    stdout, result, run = execute(settings, tool_id, attack="read_secret", path=str(secret))
    out = py_from_value(result.output)
    assert out["visible"] is True and "read" not in out
    assert out["refused"][str(secret)] == "Permission denied"
    assert SECRET.encode() not in stdout
    assert_denied(audit_record(settings, tool_id, run), "isolation")


def test_a_symlink_planted_in_a_writable_grant_cannot_bind_the_host(
    sandbox_mesh: tuple[Settings, Path], tmp_path: Path
) -> None:
    """Tool A may write /granted/t; it plants `t/root -> /` and `t/secret -> <host secret>`. Tool B, granted
    those names read-only, is refused (FAILED_PRECONDITION UNSAFE_PATH, audited, counted), never bound to
    the host's `/` or the secret; a tool granted `t` itself sees the links resolve inside its sandbox."""
    settings, granted = sandbox_mesh
    planted = granted / "t"
    planted.mkdir()
    planted.chmod(0o777)
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    writer = register(settings, writable_paths=[str(planted)])
    links = {f"{planted}/root": "/", f"{planted}/secret": str(secret)}
    _stdout, result, _run = execute(settings, writer, attack="plant_symlinks", links=links, dir=str(planted))
    assert py_from_value(result.output)["planted"] == ["root", "secret"], result.stderr
    assert (planted / "root").is_symlink()

    for name, inside in (("root", "etc/shadow"), ("secret", "")):
        reader = register(settings, read_only_paths=[f"{planted}/{name}"])
        before = metric(settings, "sandbox_denials_total", tool=reader, reason="unsafe_path")
        target = f"{planted}/{name}/{inside}".rstrip("/")
        with pytest.raises(grpc.RpcError) as refused:
            execute(settings, reader, attack="read_secret", path=target)
        error: Any = refused.value
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "symbolic link" in (error.details() or "")
        status = rpc_status.from_call(error)
        assert status is not None and from_status(status).reason == "UNSAFE_PATH"
        event = audit_record(settings, reader)
        seen = details(event)
        assert (event.outcome, seen["decision"], seen["reason"]) == ("denied", "deny", "unsafe_path")
        assert metric(settings, "sandbox_denials_total", tool=reader, reason="unsafe_path") == before + 1

    parent = register(settings, read_only_paths=[str(planted)])
    stdout, result, _run = execute(settings, parent, attack="read_secret", path=f"{planted}/secret")
    out = py_from_value(result.output)
    assert out["visible"] is False and "read" not in out  # the link points into the sandbox's own tree
    assert SECRET.encode() not in stdout


def test_exceeding_memory_is_refused(sandbox_mesh: tuple[Settings, Path]) -> None:
    settings, _ = sandbox_mesh
    tool_id = register(settings, memory_bytes=128 * 1024 * 1024)
    before = metric(settings, "sandbox_denials_total", tool=tool_id, reason="memory_bytes")
    stdout, result, run = execute(settings, tool_id, attack="memory", bytes=1024 * 1024 * 1024)
    assert b'"allocated"' not in stdout
    assert result.exit_code != 0 and "MemoryError" in result.stderr
    seen = assert_denied(audit_record(settings, tool_id, run), "memory_bytes")
    assert seen["max_rss_bytes"] < 128 * 1024 * 1024
    assert metric(settings, "sandbox_denials_total", tool=tool_id, reason="memory_bytes") == before + 1


def test_a_fork_bomb_is_contained(sandbox_mesh: tuple[Settings, Path]) -> None:
    settings, _ = sandbox_mesh
    tool_id = register(settings, max_processes=8)
    stdout, result, run = execute(settings, tool_id, attack="fork_bomb")
    lines = stdout.decode().splitlines()
    bomb = [line for line in lines if line == "bomb process"]
    # Every process of the bomb together stayed within the cap (the tool itself is one of them).
    assert 1 <= len(bomb) <= 7, lines
    (leader,) = [json.loads(line) for line in lines if line.startswith("{")]
    assert leader["refused"] == {"fork": "Resource temporarily unavailable"}
    assert result.exit_code == 1 and not result.timed_out
    assert all_gone() == []  # the leader's exit ended the whole sandbox, sleepers included
    assert_denied(audit_record(settings, tool_id, run), "max_processes")
    assert metric(settings, "tool_calls_total", tool=tool_id, outcome="denied") == 1


def test_running_past_the_wall_time_kills_the_whole_group(sandbox_mesh: tuple[Settings, Path]) -> None:
    settings, _ = sandbox_mesh
    tool_id = register(settings, wall_time_seconds=1.5)
    stdout, result, run = execute(settings, tool_id, attack="wall_time")
    assert stdout == b"sleeping\n"
    assert result.timed_out and result.exit_code == -9
    assert all_gone() == []  # the tool and the child it moved to a session of its own
    seen = assert_denied(audit_record(settings, tool_id, run), "wall_time")
    assert seen["timed_out"] is True


def test_a_cancelled_call_kills_the_whole_group(sandbox_mesh: tuple[Settings, Path]) -> None:
    settings, _ = sandbox_mesh
    tool_id = register(settings, wall_time_seconds=300)
    run = f"runs/{uuid.uuid4().hex[:12]}"

    async def cancel_after_first_line(channels: Channels) -> bytes:
        stub = tools_pb2_grpc.ToolServiceStub(channels.get("tool-sandbox"))
        request = tools_pb2.ExecuteToolRequest(
            name=f"tools/{tool_id}",
            arguments=struct_from_dict({"attack": "wall_time"}),
            run=run,
            step_id="attack",
        )
        stream = stub.ExecuteTool(request, metadata=METADATA, timeout=SAFETY)
        first = await stream.read()
        assert isinstance(first, tools_pb2.ExecuteToolResponse)
        stream.cancel()  # the client goes away: the tool and everything it started must go too
        return bytes(first.chunk.data)

    assert call(settings, "worker", cancel_after_first_line) == b"sleeping\n"
    assert all_gone() == []
    event = audit_record(settings, tool_id, run)
    assert event.outcome == "cancelled" and details(event)["decision"] == "allow"


def test_printing_100_mb_is_capped_and_flagged(sandbox_mesh: tuple[Settings, Path]) -> None:
    settings, _ = sandbox_mesh
    cap = 256 * 1024
    tool_id = register(settings, output_bytes=cap)
    stdout, result, run = execute(settings, tool_id, attack="print_100mb")
    assert len(stdout) == cap
    assert result.truncated and not result.timed_out
    assert all_gone() == []
    seen = assert_denied(audit_record(settings, tool_id, run), "output_bytes")
    assert seen["truncated"] is True


def test_no_network_without_egress_in_the_profile(sandbox_mesh: tuple[Settings, Path]) -> None:
    settings, _ = sandbox_mesh
    tool_id = register(settings)
    # A port open on every interface of this host: a failure from the sandbox is the sandbox's doing.
    listener = socket.create_server(("0.0.0.0", 0))
    port = listener.getsockname()[1]
    outside = host_address()
    target = outside or "127.0.0.1"
    with listener:
        socket.create_connection((target, port), timeout=10).close()  # reachable from the host
        _, result, run = execute(settings, tool_id, attack="network", host=target, port=port)
    out = py_from_value(result.output)
    assert "raw" not in out and "connected" not in out and "resolved" not in out
    assert out["refused"]["raw socket"] == "Operation not permitted"
    expected = "Network is unreachable" if outside is not None else "Connection refused"  # its own loopback
    assert out["refused"][f"connect {target}:{port}"] == expected
    assert "resolve example.com" in out["refused"]
    assert_denied(audit_record(settings, tool_id, run), "network")


def test_a_sandbox_that_cannot_isolate_refuses_and_reports_not_serving(tmp_path: Path) -> None:
    """Fail closed: without bubblewrap the tool-sandbox still starts, answers health NOT_SERVING, and
    refuses every execution with FAILED_PRECONDITION SANDBOX_UNAVAILABLE."""
    settings, env = isolated_settings(tmp_path, REPO / "catalog")
    env["AF_SANDBOX_BWRAP"] = "/nonexistent/bwrap"
    mesh = Mesh(settings, env=env)
    init_dev_certs(settings.certs, [*SERVICES, CLIENT_IDENTITY])
    try:
        mesh.start_service("tool-sandbox")

        async def check(channels: Channels) -> tuple[int, int, grpc.aio.AioRpcError]:
            health_stub = health_pb2_grpc.HealthStub(channels.get("tool-sandbox"))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SAFETY
            while True:  # until it answers at all
                try:
                    overall = await health_stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                    break
                except grpc.aio.AioRpcError:
                    assert loop.time() < deadline, "the tool-sandbox never answered"
                    await asyncio.sleep(0.2)
            tools = await health_stub.Check(
                health_pb2.HealthCheckRequest(service="agentflow.tools.v1.ToolService"), timeout=5
            )
            stub = tools_pb2_grpc.ToolServiceStub(channels.get("tool-sandbox"))
            request = tools_pb2.ExecuteToolRequest(
                name="tools/word-count", arguments=struct_from_dict({"text": "x"})
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in stub.ExecuteTool(request, metadata=METADATA, timeout=30):
                    pass
            return int(overall.status), int(tools.status), refused.value

        overall, tools, error = call(settings, "worker", check)
        assert overall == health_pb2.HealthCheckResponse.NOT_SERVING
        assert tools == health_pb2.HealthCheckResponse.NOT_SERVING
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "bubblewrap" in (error.details() or "")
        status = rpc_status.from_call(error)
        assert status is not None and from_status(status).reason == "SANDBOX_UNAVAILABLE"
    finally:
        mesh.down()
