"""The bubblewrap backend, for real: every test starts actual bwrap sandboxes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from agentflow_tool_sandbox import host_paths
from agentflow_tool_sandbox.bwrap import BwrapConfig, BwrapRunner
from agentflow_tool_sandbox.denials import EGRESS_UNAVAILABLE, SANDBOX_UNAVAILABLE, SandboxDenied
from agentflow_tool_sandbox.host_paths import UNSAFE_PATH
from agentflow_tool_sandbox.mcp.stdio_launch import LaunchConfig, launch
from agentflow_tool_sandbox.network import CallInfo, Mount, NetworkAccess
from agentflow_tool_sandbox.probe import probe
from agentflow_tool_sandbox.spec import EgressRule, Permissions

from .conftest import collect, limits, python_tool


@pytest.fixture
async def sandbox() -> BwrapRunner:
    runner = BwrapRunner(BwrapConfig(host_env={"AF_TEST_PASSED": "yes", "AF_TEST_SECRET": "s3cret"}))
    runner.mark_available(await probe(runner))
    assert runner.unavailable is None, runner.unavailable
    return runner


async def test_a_tool_runs_unprivileged_in_its_own_namespaces(sandbox: BwrapRunner) -> None:
    tool = python_tool("""
        import json, os, socket
        print(json.dumps({
            "uid": os.getuid(),
            "pids": [p for p in os.listdir("/proc") if p.isdigit()],
            "interfaces": [n for _, n in socket.if_nameindex()],
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "root": sorted(os.listdir("/")),
        }))
    """)
    _, result = await collect(sandbox.execute(tool, limits(), {}))
    assert result.exit_code == 0, result.stderr
    seen = result.output
    assert seen["uid"] != 0
    assert len(seen["pids"]) <= 4  # bwrap's pid 1, the watching launcher, the tool
    assert seen["interfaces"] == ["lo"]
    assert seen["cwd"] == "/sandbox/work"
    assert "AF_TEST_PASSED" not in seen["env"] and "AF_TEST_SECRET" not in seen["env"]
    assert {"var", "srv", "mnt"}.isdisjoint(seen["root"])  # the host's other top-level directories
    assert result.usage.cpu_seconds > 0 and result.usage.max_rss_bytes > 0


async def test_only_named_host_variables_pass(sandbox: BwrapRunner) -> None:
    tool = python_tool("import json, os; print(json.dumps(dict(os.environ)))", FROM_SPEC="1")
    permissions = Permissions(env=("AF_TEST_PASSED", "AF_TEST_UNSET"))
    _, result = await collect(sandbox.execute(tool, limits(), {}, permissions=permissions))
    env = result.output
    assert env["AF_TEST_PASSED"] == "yes" and env["FROM_SPEC"] == "1"
    assert "AF_TEST_SECRET" not in env and "AF_TEST_UNSET" not in env


async def test_host_paths_are_invisible_unless_granted(sandbox: BwrapRunner, tmp_path: Path) -> None:
    readable = tmp_path / "readable"
    readable.mkdir()
    (readable / "data.txt").write_text("granted")
    hidden = tmp_path / "hidden.txt"
    hidden.write_text("not granted")
    tool = python_tool("""
        import json, os, sys
        paths = json.load(sys.stdin)
        out = {"hidden": os.path.exists(paths["hidden"])}
        out["read"] = open(paths["readable"]).read()
        try:
            open(paths["readable"] + ".new", "w")
            out["wrote_readonly"] = True
        except OSError as exc:
            out["wrote_readonly"] = exc.strerror
        print(json.dumps(out))
    """)
    permissions = Permissions(read_only_paths=(str(readable),))
    arguments = {"hidden": str(hidden), "readable": str(readable / "data.txt")}
    _, result = await collect(sandbox.execute(tool, limits(), arguments, permissions=permissions))
    assert result.output == {"hidden": False, "read": "granted", "wrote_readonly": "Read-only file system"}, (
        result.stderr
    )


async def test_a_writable_path_is_writable(sandbox: BwrapRunner, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    tool = python_tool("import sys, json; open(json.load(sys.stdin)['f'], 'w').write('from the tool')")
    permissions = Permissions(writable_paths=(str(shared),))
    _, result = await collect(
        sandbox.execute(tool, limits(), {"f": str(shared / "out")}, permissions=permissions)
    )
    assert result.exit_code == 0, result.stderr
    assert (shared / "out").read_text() == "from the tool"


async def test_a_granted_path_through_a_symlink_is_refused_not_bound(
    sandbox: BwrapRunner, tmp_path: Path
) -> None:
    """Another tool (or host user) with write access plants `ln -s / granted/x`: a grant of `granted/x`,
    or of anything below it or below a symlinked ancestor, refuses the call instead of binding the host."""
    planted = tmp_path / "t"
    planted.mkdir()
    (planted / "x").symlink_to("/")
    (tmp_path / "alias").symlink_to(planted)
    tool = python_tool("print(open('/etc/hostname').read())")
    cases = {
        str(planted / "x"): str(planted / "x"),
        str(planted / "x" / "etc"): str(planted / "x"),
        str(tmp_path / "alias" / "x"): str(tmp_path / "alias"),
    }
    for path, component in cases.items():
        for permissions in (Permissions(read_only_paths=(path,)), Permissions(writable_paths=(path,))):
            with pytest.raises(SandboxDenied) as denied:
                await collect(sandbox.execute(tool, limits(), {}, permissions=permissions, tool_id="reader"))
            assert denied.value.reason == UNSAFE_PATH
            assert denied.value.metadata == {"tool": "reader", "path": path, "component": component}
            assert "symbolic link" in str(denied.value)
        with pytest.raises(SandboxDenied) as denied:
            await sandbox.spawn(tool, limits(), Permissions(read_only_paths=(path,)))
        assert denied.value.reason == UNSAFE_PATH


async def test_a_symlink_inside_a_granted_directory_stays_inside_the_sandbox(
    sandbox: BwrapRunner, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "root").symlink_to("/")
    (granted / "secret").symlink_to(secret)
    os.chmod(tmp_path, 0o755)
    tool = python_tool("""
        import json, os, sys
        granted = json.load(sys.stdin)["granted"]
        out = {"root": sorted(os.listdir(granted + "/root")), "secret": os.path.exists(granted + "/secret")}
        print(json.dumps(out))
    """)
    permissions = Permissions(read_only_paths=(str(granted),))
    _, result = await collect(
        sandbox.execute(tool, limits(), {"granted": str(granted)}, permissions=permissions)
    )
    assert result.exit_code == 0, result.stderr
    assert result.output["secret"] is False  # the link resolves in the sandbox, where the file is not bound
    assert "sandbox" in result.output["root"] and {"srv", "var"}.isdisjoint(result.output["root"])


def test_the_inode_checked_is_the_inode_bound(tmp_path: Path) -> None:
    """Swapping the granted directory for a symlink after the check changes nothing: bwrap binds the
    descriptor that was opened without following links, not the name."""
    granted, secret_dir = tmp_path / "granted", tmp_path / "secret"
    granted.mkdir()
    secret_dir.mkdir()
    (granted / "data.txt").write_text("checked")
    (secret_dir / "data.txt").write_text("host secret")
    os.chmod(tmp_path, 0o755)
    runner = BwrapRunner(BwrapConfig(seccomp=False))
    spec = python_tool("import sys; print(open(sys.argv[1]).read())")
    spec = replace(spec, command=(*spec.command, str(granted / "data.txt")))
    env_fd = os.memfd_create("env")
    os.write(env_fd, json.dumps({"PATH": "/usr/bin:/bin"}).encode())
    os.lseek(env_fd, 0, os.SEEK_SET)
    try:
        with host_paths.opened(Permissions(read_only_paths=(str(granted),)), "swap") as opened:
            granted.rename(tmp_path / "moved")
            granted.symlink_to(secret_dir)  # what a by-name bind would now follow
            argv = runner.argv(
                spec, limits(), opened, NetworkAccess(), uid=None, env_fd=env_fd, usage_fd=None
            )
            at = argv.index(str(granted))  # named once: as the target of a bind by descriptor
            assert argv[at - 2 : at] == ["--ro-bind-fd", str(opened[0].fd)] and argv.count(str(granted)) == 1
            seen = subprocess.run(
                argv, pass_fds=(env_fd, *(o.fd for o in opened)), capture_output=True, timeout=60, check=False
            )
    finally:
        os.close(env_fd)
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout == b"checked\n"


async def test_process_count_is_capped(sandbox: BwrapRunner) -> None:
    tool = python_tool("""
        import os, time
        children = 0
        try:
            for _ in range(50):
                if os.fork() == 0:
                    time.sleep(5)
                    os._exit(0)
                children += 1
        except BlockingIOError:
            print(children)
    """)
    _, result = await collect(sandbox.execute(tool, limits(max_processes=4), {}))
    assert result.exit_code == 0, result.stderr
    assert int(result.output) < 4


async def test_egress_without_a_provider_is_denied(sandbox: BwrapRunner) -> None:
    permissions = Permissions(egress=(EgressRule("example.com", 443),))
    with pytest.raises(SandboxDenied) as denied:
        await collect(sandbox.execute(python_tool("print(1)"), limits(), {}, permissions=permissions))
    assert denied.value.reason == EGRESS_UNAVAILABLE


class FakeEgress:
    """An egress provider that binds a host directory in and sets a variable: checks the hook's plumbing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.calls: list[tuple[CallInfo, Sequence[EgressRule]]] = []
        self.open = 0

    @asynccontextmanager
    async def attach(self, call: CallInfo, rules: Sequence[EgressRule]) -> AsyncIterator[NetworkAccess]:
        self.calls.append((call, rules))
        self.open += 1
        try:
            yield NetworkAccess(
                mounts=(Mount(str(self.directory), "/run/egress"),),
                env={"AF_EGRESS": "/run/egress/sock"},
                command_prefix=("/usr/bin/env", "AF_PREFIXED=1"),
            )
        finally:
            self.open -= 1


async def test_an_egress_provider_plugs_in_mounts_and_env(tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("proxy here")
    os.chmod(tmp_path, 0o755)  # the tool's uid must be able to enter it, as a real proxy's socket dir
    egress = FakeEgress(tmp_path)
    runner = BwrapRunner(BwrapConfig(egress=egress))
    runner.mark_available(None)
    tool = python_tool("""
        import os
        print(os.environ["AF_EGRESS"], os.environ["AF_PREFIXED"], open("/run/egress/marker").read())
    """)
    permissions = Permissions(egress=(EgressRule("example.com", 443),))
    _, result = await collect(runner.execute(tool, limits(), {}, permissions=permissions, tool_id="fetch"))
    assert result.output == "/run/egress/sock 1 proxy here\n", result.stderr
    assert egress.calls[0][0].tool_id == "fetch" and egress.calls[0][1] == (EgressRule("example.com", 443),)
    assert egress.open == 0


async def test_an_unprobed_or_failed_sandbox_refuses_to_run() -> None:
    runner = BwrapRunner(BwrapConfig(bwrap="/nonexistent/bwrap"))
    with pytest.raises(SandboxDenied) as denied:
        await collect(runner.execute(python_tool("print(1)"), limits(), {}))
    assert denied.value.reason == SANDBOX_UNAVAILABLE
    problem = await probe(runner)
    assert problem is not None and "/nonexistent/bwrap" in problem


async def test_the_probe_rejects_a_sandbox_that_does_not_isolate(tmp_path: Path) -> None:
    # A "bwrap" that runs the command directly on the host: the probe must notice.
    fake = tmp_path / "fake-bwrap"
    fake.write_text('#!/bin/sh\nwhile [ "$1" != "--" ]; do shift; done; shift\nexec "$@"\n')
    fake.chmod(0o755)
    runner = BwrapRunner(BwrapConfig(bwrap=str(fake)))
    problem = await probe(runner)
    assert problem is not None


def test_the_command_line_unprivileged_and_as_root() -> None:
    spec = python_tool("print(1)")
    plain = BwrapRunner(BwrapConfig(privileged=False)).argv(
        spec, limits(), (), NetworkAccess(), uid=None, env_fd=3, usage_fd=4
    )
    sandbox_args = plain[: plain.index("--")]
    assert {"--unshare-all", "--unshare-user", "--disable-userns", "--clearenv", "--die-with-parent"} <= set(
        sandbox_args
    )
    assert "--user" not in plain and "--cap-add" not in plain
    rooted = BwrapRunner(BwrapConfig(privileged=True)).argv(
        spec, limits(), (), NetworkAccess(), uid=1234, env_fd=3, usage_fd=4
    )
    assert "--unshare-user" not in rooted and "--unshare-net" in rooted
    assert rooted[rooted.index("--user") + 1] == "1234:1234"
    assert "RLIMIT_NPROC=32:32" in rooted


async def test_a_stdio_mcp_server_is_spawned_in_the_sandbox(sandbox: BwrapRunner, tmp_path: Path) -> None:
    script = tmp_path / "server" / "echo_server.py"
    script.parent.mkdir()
    os.chmod(tmp_path, 0o755)
    script.write_text(
        "import json, os, socket, sys\n"
        "for line in sys.stdin:\n"
        "    print(json.dumps({'uid': os.getuid(), 'got': line.strip(), 'env': sorted(os.environ),\n"
        "        'interfaces': [n for _, n in socket.if_nameindex()],\n"
        "        'tmp_path': os.path.exists(sys.argv[1]),\n"
        "        'script_dir': os.listdir(os.path.dirname(__file__))}), flush=True)\n"
    )
    secret_dir = tmp_path / "elsewhere"
    secret_dir.mkdir()
    config = LaunchConfig(scratch_root=tmp_path / "scratch", sandbox=sandbox)
    env = {"GREETING": "hi", "AF_JWT_SECRET": "never passed"}
    server = await launch(config, ["{python}", str(script), str(secret_dir)], env)
    try:
        server.stdin.write(b"ping\n")
        await server.stdin.drain()
        reply = json.loads(await asyncio.wait_for(server.stdout.readline(), 60))
    finally:
        await server.stop(grace=1)
    assert reply["got"] == "ping" and reply["uid"] != 0
    assert reply["interfaces"] == ["lo"] and reply["tmp_path"] is False
    assert reply["script_dir"] == ["echo_server.py"]
    assert "GREETING" in reply["env"] and "AF_JWT_SECRET" not in reply["env"]
    assert server.process.returncode is not None


async def test_spawn_fails_closed_too() -> None:
    runner = BwrapRunner(BwrapConfig())
    with pytest.raises(SandboxDenied) as denied:
        await runner.spawn(python_tool("print(1)"), limits(), Permissions())
    assert denied.value.reason == SANDBOX_UNAVAILABLE


async def test_the_syscall_filter_refuses_escape_prone_calls(sandbox: BwrapRunner) -> None:
    tool = python_tool("""
        import ctypes, json, subprocess, threading
        libc = ctypes.CDLL(None, use_errno=True)

        def errno_of(rc):
            return ctypes.get_errno() if rc != 0 else 0

        status = open("/proc/self/status").read().splitlines()
        seen = {"seccomp": [line.split()[1] for line in status if line.startswith("Seccomp:")]}
        seen["unshare"] = errno_of(libc.unshare(0x10000000))  # CLONE_NEWUSER
        seen["ptrace"] = errno_of(libc.ptrace(0, 0, 0, 0))  # PTRACE_TRACEME
        seen["mount"] = errno_of(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
        worker = threading.Thread(target=lambda: None)
        worker.start()
        worker.join()
        seen["subprocess"] = subprocess.run(["echo", "ok"], capture_output=True, text=True).stdout.strip()
        print(json.dumps(seen))
    """)
    _, result = await collect(sandbox.execute(tool, limits(), {}))
    assert result.exit_code == 0, result.stderr
    assert result.output == {"seccomp": ["2"], "unshare": 1, "ptrace": 1, "mount": 1, "subprocess": "ok"}
