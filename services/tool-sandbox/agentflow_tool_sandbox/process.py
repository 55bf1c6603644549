"""Low-level process control for the process backend: spawn, exit notification, group kill, reaping."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from agentflow_tool_sandbox.events import Usage

EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, pass_fds: Sequence[int] = ()
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session (its own process group) with piped stdio, only `env`, and no open
    file descriptor but stdio and `pass_fds`.

    No Python code runs in the child between fork and exec. The caller reaps it with `reap` (not through
    Popen), which is what gives per-process usage.
    """
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
        close_fds=True,
        pass_fds=tuple(pass_fds),
    )


def kill_group(pgid: int) -> None:
    """SIGKILL every process in the group (nothing when the group is gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def exited(pid: int) -> None:
    """Return once `pid` has exited, without reaping it (so its pid and group id stay reserved)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        await asyncio.to_thread(os.waitid, os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        return
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(pidfd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def reap(pid: int) -> tuple[int, Usage]:
    """Reap an exited `pid`: its exit code (negative signal number) and resource usage."""
    _, status, rusage = os.wait4(pid, 0)
    usage = Usage(
        cpu_seconds=rusage.ru_utime + rusage.ru_stime,
        max_rss_bytes=rusage.ru_maxrss * 1024,
    )
    return os.waitstatus_to_exitcode(status), usage


def start_error_code(exc: OSError) -> int:
    """The shell's exit code for a command that could not start."""
    return EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_NOT_EXECUTABLE


async def feed(pipe: int, payload: bytes) -> None:
    """Write `payload` to the non-blocking pipe fd `pipe`, then close it; a reader that left is fine."""
    loop = asyncio.get_running_loop()
    os.set_blocking(pipe, False)
    view = memoryview(payload)
    try:
        while view:
            try:
                written = os.write(pipe, view)
            except BlockingIOError:
                await _writable(loop, pipe)
                continue
            view = view[written:]
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        os.close(pipe)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)
