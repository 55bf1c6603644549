"""The one place that starts a stdio MCP server process.

With the bubblewrap backend (`LaunchConfig.sandbox`, the default in the service) the server runs in its own
sandbox like a tool call (`BwrapRunner.spawn`): no network, read-only system, a tmpfs workdir, no
capabilities, an unprivileged uid, rlimits (address space, processes, file size; no CPU-time limit: the server
is long-lived). Besides the Python runtime it may read only the directories of the files its command names
(its script); for an API-registered server each of them must pass the operator's delegation (`readable`,
from `policy`), or the server is not started. If the sandbox cannot isolate, the server is not started
(fail closed).

Without it (the unsafe development backend, or unit tests): a plain child process in its own session with a
cleared environment, a scratch working directory and the same rlimits.

`AF_*` variables (the service's own configuration) are never handed to a server, whatever `pass_env` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentflow_tool_sandbox import rlimits
from agentflow_tool_sandbox.bwrap import BwrapRunner, Spawned
from agentflow_tool_sandbox.mcp.model import DEFAULT_MEMORY_BYTES
from agentflow_tool_sandbox.spec import Limits, Permissions, ProcessSpec
from agentflow_tool_sandbox.validation import RESERVED_ENV_PREFIX, validate_permissions

PYTHON_PLACEHOLDER = "{python}"
BASE_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
STREAM_LIMIT = 32 * 1024 * 1024
"""Longest line (one JSON-RPC message) read from the server."""

ReadableCheck = Callable[[str], "str | None"]
"""Why a path named in the command may not be made readable (its directory); None when it may."""


class LaunchRefused(Exception):
    """The command names a file whose directory the server may not read: nothing was started."""


@dataclass(frozen=True)
class LaunchConfig:
    """Host-side settings for stdio servers."""

    scratch_root: Path
    python: str = field(default_factory=lambda: sys.executable)
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    max_processes: int = 256
    max_file_bytes: int = 64 * 1024 * 1024
    sandbox: BwrapRunner | None = None
    """Run servers in bubblewrap sandboxes (None: plain processes, development only)."""


class LaunchedServer:
    """A running server process: JSON-RPC lines on `stdin`/`stdout`, diagnostics on `stderr`."""

    def __init__(
        self, process: asyncio.subprocess.Process, scratch: Path | None, spawned: Spawned | None = None
    ) -> None:
        self.process = process
        self.scratch = scratch
        self.spawned = spawned
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        self.stdin: asyncio.StreamWriter = process.stdin
        self.stdout: asyncio.StreamReader = process.stdout
        self.stderr: asyncio.StreamReader = process.stderr

    async def stop(self, grace: float = 2.0) -> None:
        """Close stdin, give the server `grace` seconds to exit, then kill its whole process group."""
        if self.spawned is not None:
            await self.spawned.stop(grace)
            return
        with contextlib.suppress(Exception):
            self.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await self.process.wait()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


async def launch(
    config: LaunchConfig,
    command: Sequence[str],
    env: Mapping[str, str],
    *,
    readable: ReadableCheck | None = None,
) -> LaunchedServer:
    """Start `command` (`{python}` is this service's interpreter) with only the base variables and `env`.

    `readable` (an API-registered server's) must accept every existing file the command names by absolute
    path, else LaunchRefused."""
    env = {k: v for k, v in env.items() if not k.upper().startswith(RESERVED_ENV_PREFIX)}
    if readable is not None:
        _check_readable(command, readable)
    if config.sandbox is not None:
        caps = Limits(memory_bytes=config.memory_bytes, max_processes=config.max_processes)
        readable_paths = Permissions(read_only_paths=_script_dirs(command))
        spec = ProcessSpec(command=tuple(command), env=env)
        spawned = await config.sandbox.spawn(spec, caps, readable_paths, stream_limit=STREAM_LIMIT)
        return LaunchedServer(spawned.process, None, spawned)
    config.scratch_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="mcp-", dir=config.scratch_root.resolve()))
    argv = [arg.replace(PYTHON_PLACEHOLDER, config.python) for arg in command]
    limits = [
        rlimits.Rlimit(resource.RLIMIT_AS, config.memory_bytes, config.memory_bytes),
        rlimits.Rlimit(resource.RLIMIT_NPROC, config.max_processes, config.max_processes),
        rlimits.Rlimit(resource.RLIMIT_FSIZE, config.max_file_bytes, config.max_file_bytes),
        rlimits.Rlimit(resource.RLIMIT_CORE, 0, 0),
    ]
    try:
        process = await asyncio.create_subprocess_exec(
            *rlimits.launch_argv(config.python, limits, argv),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=scratch,
            env={**BASE_ENV, "HOME": str(scratch), **env},
            start_new_session=True,
            limit=STREAM_LIMIT,
        )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return LaunchedServer(process, scratch)


def _check_readable(command: Sequence[str], readable: ReadableCheck) -> None:
    """LaunchRefused when a file the command names (bound by `_script_dirs`) is not `readable`."""
    for arg in command[1:]:
        problem = readable(arg) if arg.startswith("/") and os.path.isfile(arg) else None
        if problem is not None:
            raise LaunchRefused(f"{arg}: {problem}")


def _script_dirs(command: Sequence[str]) -> tuple[str, ...]:
    """The directories of the existing files named by absolute path in `command` (the server's script),
    each a path a profile could grant (never `/`, nor below /proc, /sys or /dev)."""
    found: list[str] = []
    for arg in command[1:]:
        if arg.startswith("/") and os.path.isfile(arg):
            directory = os.path.dirname(os.path.normpath(arg))
            if directory not in found and not validate_permissions(
                Permissions(read_only_paths=(directory,)), "", None
            ):
                found.append(directory)
    return tuple(found)
