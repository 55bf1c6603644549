"""The bubblewrap backend (the default): every tool call runs in a fresh bwrap sandbox.

Per call: new mount, pid, ipc, uts and cgroup namespaces (and network, unless an egress provider grants
the profile's hosts); a read-only view of the system (`/usr`, the `/bin` and `/lib*` links, a handful of
`/etc` files, the Python runtime), the profile's read-only and writable paths and nothing else of the host;
a fresh tmpfs workdir (and `/tmp`), size-capped; an environment built from scratch (sent on a memfd, never
on a command line); no capabilities, `no_new_privs`; rlimits (CPU, address space, processes, file size,
no core) and an unprivileged uid of its own; `--die-with-parent` and `--new-session`. Streaming, wall time,
the output cap and the kill of the whole process group are `supervise.py`'s: killing the outer bwrap kills
the sandbox's pid 1 (die-with-parent), and with it every process in the sandbox's pid namespace.

User ids. As root, bwrap runs privileged without a user namespace (a user namespace would map the tool
to root outside, where RLIMIT_NPROC is not enforced and root-owned files stay readable); the launcher
inside empties the capability bounding set and switches to a uid of its own from a pool (one per
concurrent call, so process limits are per call), which drops every capability. Not as root, bwrap uses
`--unshare-all` (user namespace included) and the tool keeps the service's unprivileged uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import secrets
import shutil
import signal
import sys
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentflow_runtime import context

from agentflow_tool_sandbox import host_paths, process, rlimits, seccomp
from agentflow_tool_sandbox.denials import EGRESS_UNAVAILABLE, SANDBOX_UNAVAILABLE, SandboxDenied
from agentflow_tool_sandbox.events import Event, Usage
from agentflow_tool_sandbox.host_paths import OpenedPath
from agentflow_tool_sandbox.network import CallInfo, EgressProvider, NetworkAccess
from agentflow_tool_sandbox.spec import NO_PERMISSIONS, Limits, Permissions, ProcessSpec, with_python
from agentflow_tool_sandbox.supervise import supervise

log = logging.getLogger("agentflow.tool_sandbox.bwrap")

WORKDIR = "/sandbox/work"
LAUNCHER = "/sandbox/launch.py"
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_PATHS = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/mime.types",
)
"""The only files of the host's /etc a tool sees (no passwd, hosts, resolv.conf, secrets)."""
ROOT_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")
"""What the launcher keeps (as root) to drop the bounding set and switch uid; gone before the tool runs."""
SIGNAL_EXIT_BASE = 128
"""bwrap exits 128+N when the sandboxed process died of signal N."""


UID_BASE = 1_900_000_000
UID_BLOCKS = 16_384
"""Each service instance takes a random block of `uid_count` uids above UID_BASE, so that sandbox services
sharing a host (replicas, test meshes) rarely share a uid (RLIMIT_NPROC counts a uid's processes)."""


class UidPool:
    """Unprivileged uids handed out one per running call (so RLIMIT_NPROC counts per call)."""

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self._free = list(range(base + size - 1, base - 1, -1))

    @contextmanager
    def lease(self) -> Iterator[int]:
        """A uid no other running call has; SandboxDenied when every uid is in use."""
        if not self._free:
            raise SandboxDenied(
                "too many concurrent sandboxed calls", reason="SANDBOX_BUSY", metadata={"limit": "uids"}
            )
        uid = self._free.pop()
        try:
            yield uid
        finally:
            self._free.append(uid)


@dataclass(frozen=True)
class BwrapConfig:
    """Host-side settings of the bubblewrap backend."""

    bwrap: str = "bwrap"
    python: str = field(default_factory=lambda: sys.executable)
    uid_count: int = 4096
    uid_base: int = -1
    """The first uid of the pool; -1 = a random block above UID_BASE (see UID_BLOCKS)."""
    max_file_bytes: int = 64 * 1024 * 1024
    """RLIMIT_FSIZE, and the size of the tmpfs workdir and /tmp."""
    privileged: bool = field(default_factory=lambda: os.geteuid() == 0)
    egress: EgressProvider | None = None
    host_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    """Where variables named by a profile's `env` are read from."""
    seccomp: bool = True
    """Load the syscall filter of `seccomp.py` (on the architectures it supports)."""


class BwrapRunner:
    """The `Runner` that starts each tool call in its own bubblewrap sandbox; fails closed.

    Until `probe` confirms isolation (see `probe.py`), or after it failed, every call is refused with
    FAILED_PRECONDITION `SANDBOX_UNAVAILABLE`.
    """

    name = "bwrap"

    def __init__(self, config: BwrapConfig) -> None:
        self.config = config
        self.unavailable: str | None = "the sandbox has not been probed yet"
        base = config.uid_base
        if base < 0:
            base = UID_BASE + secrets.randbelow(UID_BLOCKS) * config.uid_count
        self._uids = UidPool(base, config.uid_count)
        self._cleanups: set[asyncio.Task[tuple[int, Usage]]] = set()

    def mark_available(self, problem: str | None) -> None:
        """Record the probe's verdict: None = isolation works, else why it does not."""
        self.unavailable = problem

    def command(self, spec: ProcessSpec) -> list[str]:
        """The tool's argv: `{python}` becomes the interpreter running this service (bound read-only)."""
        return with_python(spec.command, self.config.python)

    async def execute(
        self,
        spec: ProcessSpec,
        limits: Limits,
        arguments: Mapping[str, Any],
        *,
        permissions: Permissions = NO_PERMISSIONS,
        tool_id: str = "",
    ) -> AsyncGenerator[Event, None]:
        """Run `spec` sandboxed; see `Runner.execute`."""
        if self.unavailable is not None:
            raise SandboxDenied(
                f"the tool sandbox cannot isolate tools, so it runs none: {self.unavailable}",
                reason=SANDBOX_UNAVAILABLE,
                metadata={"backend": self.name},
            )
        async for event in self._run(spec, limits, arguments, permissions, tool_id):
            yield event

    async def run_unchecked(
        self, spec: ProcessSpec, limits: Limits, arguments: Mapping[str, Any], permissions: Permissions
    ) -> AsyncGenerator[Event, None]:
        """`execute` without the availability check: for the probe itself."""
        async for event in self._run(spec, limits, arguments, permissions, "sandbox-probe"):
            yield event

    async def spawn(
        self,
        spec: ProcessSpec,
        limits: Limits,
        permissions: Permissions,
        *,
        stream_limit: int = 64 * 1024,
    ) -> Spawned:
        """Start a long-lived sandboxed process (an MCP stdio server) with piped stdio: the same sandbox as
        a call, without a wall time or CPU limit and without network (egress rules are refused: the proxy
        serves calls). Its uid stays leased until `Spawned.stop`."""
        if self.unavailable is not None:
            raise SandboxDenied(
                f"the tool sandbox cannot isolate processes, so it starts none: {self.unavailable}",
                reason=SANDBOX_UNAVAILABLE,
                metadata={"backend": self.name},
            )
        if permissions.egress:
            raise SandboxDenied(
                "a long-lived sandboxed process gets no network", reason=EGRESS_UNAVAILABLE, metadata={}
            )
        limits = limits.with_defaults()
        async with AsyncExitStack() as held:
            uid = held.enter_context(self._uids.lease()) if self.config.privileged else None
            with contextlib.ExitStack() as fds:
                granted = fds.enter_context(host_paths.opened(permissions, "stdio-server"))
                environment = self.environment(spec, permissions, NetworkAccess())
                env_fd = _memfd("af-spawn-env", json.dumps(environment).encode())
                fds.callback(os.close, env_fd)
                filter_fd = self._seccomp_fd()
                if filter_fd is not None:
                    fds.callback(os.close, filter_fd)
                argv = self.argv(
                    spec,
                    limits,
                    granted,
                    NetworkAccess(),
                    uid=uid,
                    env_fd=env_fd,
                    usage_fd=None,
                    cpu_limit=False,
                    seccomp_fd=filter_fd,
                )
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env={},
                    cwd="/",
                    pass_fds=_passed(env_fd, filter_fd, granted),
                    start_new_session=True,
                    limit=stream_limit,
                )
            # Started (its copies of the fds are its own): the uid lease lasts until `Spawned.stop`.
            return Spawned(proc, held.pop_all())

    def _seccomp_fd(self) -> int | None:
        """A memfd holding the syscall filter, None when it is off or the architecture has none."""
        if not (self.config.seccomp and seccomp.supported()):
            return None
        return _memfd("af-seccomp", seccomp.program())

    async def _run(
        self,
        spec: ProcessSpec,
        limits: Limits,
        arguments: Mapping[str, Any],
        permissions: Permissions,
        tool_id: str,
    ) -> AsyncGenerator[Event, None]:
        limits = limits.with_defaults()
        async with AsyncExitStack() as stack:
            # Opened before anything else: a granted path with a symlink refuses the call (UNSAFE_PATH).
            granted = stack.enter_context(host_paths.opened(permissions, tool_id))
            network = NetworkAccess()
            if permissions.egress:
                if self.config.egress is None:
                    raise SandboxDenied(
                        "the tool's profile allows network hosts but this sandbox has no egress proxy",
                        reason=EGRESS_UNAVAILABLE,
                        metadata={"tool": tool_id},
                    )
                call = context.current()
                info = CallInfo(tool_id=tool_id, tenant=call.tenant, principal=call.principal)
                network = await stack.enter_async_context(self.config.egress.attach(info, permissions.egress))
            uid = stack.enter_context(self._uids.lease()) if self.config.privileged else None
            env = self.environment(spec, permissions, network)
            env_fd = _memfd("af-tool-env", json.dumps(env).encode())
            stack.callback(os.close, env_fd)
            filter_fd = self._seccomp_fd()
            if filter_fd is not None:
                stack.callback(os.close, filter_fd)
            usage_read, usage_write = os.pipe2(os.O_CLOEXEC)
            report = _UsageReport(usage_read)
            stack.callback(report.close)
            argv = self.argv(
                spec,
                limits,
                granted,
                network,
                uid=uid,
                env_fd=env_fd,
                usage_fd=usage_write,
                seccomp_fd=filter_fd,
            )
            try:
                popen = process.spawn(
                    argv, env={}, cwd=Path("/"), pass_fds=(usage_write, *_passed(env_fd, filter_fd, granted))
                )
            except OSError as exc:
                raise SandboxDenied(
                    f"cannot start bubblewrap ({self.config.bwrap}): {exc.strerror or exc}",
                    reason=SANDBOX_UNAVAILABLE,
                ) from exc
            finally:
                os.close(usage_write)
            events = supervise(
                popen,
                limits,
                arguments,
                cleanups=self._cleanups,
                exit_code=_translate_exit_code,
                usage=report.usage,
            )
            async with aclosing(events):
                async for event in events:
                    yield event

    def environment(
        self, spec: ProcessSpec, permissions: Permissions, network: NetworkAccess
    ) -> dict[str, str]:
        """The tool's whole environment: base variables, the spec's, the profile's passed names, network."""
        env = {"PATH": BASE_PATH, "HOME": WORKDIR, "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
        env.update(spec.env)
        env.update(
            {name: self.config.host_env[name] for name in permissions.env if name in self.config.host_env}
        )
        env.update(network.env)
        return env

    def argv(
        self,
        spec: ProcessSpec,
        limits: Limits,
        granted: Sequence[OpenedPath],
        network: NetworkAccess,
        *,
        uid: int | None,
        env_fd: int,
        usage_fd: int | None,
        cpu_limit: bool = True,
        seccomp_fd: int | None = None,
    ) -> list[str]:
        """The bwrap command line for one call (`usage_fd` None: no usage report, the launcher execs the
        process directly; `cpu_limit` False: no RLIMIT_CPU, for a long-lived process). The profile's paths
        come `granted`: opened without following symlinks (`host_paths.opened`), bound by descriptor."""
        config = self.config
        args = [config.bwrap]
        if config.privileged:
            args += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
            if not network.share_host_network:
                args.append("--unshare-net")
            args += ["--cap-drop", "ALL"]
            for cap in ROOT_CAPS:
                args += ["--cap-add", cap]
        else:
            # --unshare-all only tries the user namespace; --disable-userns needs it for certain.
            args += ["--unshare-all", "--unshare-user"]
            if network.share_host_network:
                args.append("--share-net")
            args += ["--disable-userns", "--cap-drop", "ALL"]
        args += ["--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox"]
        if seccomp_fd is not None:
            args += ["--seccomp", str(seccomp_fd)]
        size = str(config.max_file_bytes)
        mounts = _Mounts()
        for path in SYSTEM_PATHS:
            mounts.system(path)
        for path in ETC_PATHS:
            mounts.bind(path, path, writable=False, required=False)
        # The fresh filesystems first, so that a granted path below /tmp is bound on top, not hidden.
        mounts.fresh(["--proc", "/proc"], "/proc")
        mounts.fresh(["--dev", "/dev"], "/dev")
        mounts.fresh(["--perms", "1777", "--size", size, "--tmpfs", "/tmp"], "/tmp")
        mounts.fresh(["--perms", "0777", "--size", size, "--tmpfs", WORKDIR], WORKDIR)
        for path in _python_roots(config.python):
            mounts.bind(path, path, writable=False, required=True)
        mounts.bind(str(rlimits.LAUNCHER), LAUNCHER, writable=False, required=True)
        for opened in granted:
            mounts.bind_fd(opened.fd, opened.path, writable=opened.writable)
        for mount in network.mounts:
            mounts.bind(mount.source, mount.target, writable=mount.writable, required=True)
        args += mounts.args
        args += ["--chdir", WORKDIR]
        plan = rlimits.plan(limits, max_processes=limits.max_processes, max_file_bytes=config.max_file_bytes)
        if not cpu_limit:
            plan = [r for r in plan if r.resource != resource.RLIMIT_CPU]
        launcher = [config.python, "-I", "-S", LAUNCHER, "--env-fd", str(env_fd)]
        if usage_fd is not None:
            launcher += ["--usage-fd", str(usage_fd)]
        if uid is not None:
            launcher += ["--user", f"{uid}:{uid}"]
        prefix = with_python(network.command_prefix, config.python)
        return [*args, "--", *launcher, *(r.argument() for r in plan), "--", *prefix, *self.command(spec)]


class _Mounts:
    """Bind arguments in a safe order, with the directories leading to each target created 0755 (bwrap
    would otherwise copy the host's modes, e.g. a 0700 /root the tool's uid cannot cross)."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self._made: set[str] = {"/"}

    def system(self, path: str) -> None:
        if os.path.islink(path):
            self._parents(path)
            self.args += ["--symlink", os.readlink(path), path]
            self._made.add(path)
        elif os.path.isdir(path):
            self.bind(path, path, writable=False, required=True)

    def fresh(self, args: list[str], target: str) -> None:
        """A new filesystem (proc, dev, tmpfs) at `target`."""
        self._parents(target)
        self.args += args
        self._made.add(target)

    def bind(self, source: str, target: str, *, writable: bool, required: bool) -> None:
        if not required and not os.path.exists(source):
            return
        self._parents(target)
        flag = "--bind" if writable else "--ro-bind"
        self.args += [flag if required else f"{flag}-try", source, target]
        self._made.add(target)

    def bind_fd(self, fd: int, target: str, *, writable: bool) -> None:
        """Bind what `fd` (an O_PATH descriptor, see `host_paths`) refers to: no name is resolved again."""
        self._parents(target)
        self.args += ["--bind-fd" if writable else "--ro-bind-fd", str(fd), target]
        self._made.add(target)

    def _parents(self, target: str) -> None:
        parents = list(Path(target).parents)[::-1]
        for parent in map(str, parents):
            if parent not in self._made:
                self.args += ["--perms", "0755", "--dir", parent]
                self._made.add(parent)


def _python_roots(python: str) -> list[str]:
    """The directories the interpreter needs (outside /usr, which is bound anyway): the venv, as named
    and resolved, and the installation it is based on."""
    real = os.path.realpath(python)
    named = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(python))}
    wanted = named | {os.path.realpath(p) for p in named} | {os.path.dirname(os.path.dirname(real))}
    outside = sorted(p for p in wanted if os.path.isdir(p) and p != "/usr" and not p.startswith("/usr/"))
    return [p for p in outside if not any(p.startswith(other + "/") for other in outside)]


@dataclass
class Spawned:
    """A long-lived sandboxed process (see `BwrapRunner.spawn`)."""

    process: asyncio.subprocess.Process
    resources: AsyncExitStack | None = None
    """What the process holds until it is stopped (its uid lease)."""

    async def stop(self, grace: float = 2.0) -> None:
        """Close stdin, give the process `grace` seconds, then kill the sandbox (its whole pid namespace)."""
        process = self.process
        try:
            if process.stdin is not None:
                with contextlib.suppress(Exception):
                    process.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await process.wait()
        finally:
            if self.resources is not None:
                resources, self.resources = self.resources, None
                await resources.aclose()


class _UsageReport:
    """The tool's resource usage as the launcher inside the sandbox reports it on a pipe."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def usage(self, fallback: Usage) -> Usage:
        """The reported usage (the launcher has exited by now), else `fallback` (e.g. after a kill)."""
        if self.fd is None:
            return fallback
        os.set_blocking(self.fd, False)
        try:
            data = os.read(self.fd, 4096)
            report = json.loads(data)
            return Usage(float(report["cpu_seconds"]), int(report["max_rss_bytes"]), fallback.wall_seconds)
        except (OSError, ValueError, KeyError, TypeError):
            return fallback

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _passed(env_fd: int, filter_fd: int | None, granted: Sequence[OpenedPath]) -> tuple[int, ...]:
    """The descriptors bwrap inherits: the environment, the syscall filter, the granted paths."""
    extra = () if filter_fd is None else (filter_fd,)
    return (env_fd, *extra, *(opened.fd for opened in granted))


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _translate_exit_code(code: int) -> int:
    """bwrap's 128+N for a child killed by signal N becomes -N, as for the process backend."""
    if SIGNAL_EXIT_BASE < code <= SIGNAL_EXIT_BASE + 64:
        return -(code - SIGNAL_EXIT_BASE)
    return code


def bwrap_path(configured: str) -> str | None:
    """The bwrap executable to use, None when it is not installed."""
    return shutil.which(configured)
