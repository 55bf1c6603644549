"""The process backend (development only): runs a tool as a plain child process in its own session,
scratch dir and rlimits, without any isolation. `AF_SANDBOX_BACKEND=process` selects it, loudly.

The child is `launch.py` (rlimits, then exec of the tool), so nothing runs between fork and exec, and the
backend reaps the process itself with `wait4` to report that process's own resource usage. Streaming,
limits and group kill are `supervise.py`'s.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import sys
import tempfile
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentflow_tool_sandbox import process, rlimits
from agentflow_tool_sandbox.events import Event, Result, Usage
from agentflow_tool_sandbox.spec import NO_PERMISSIONS, Limits, Permissions, ProcessSpec, with_python
from agentflow_tool_sandbox.supervise import supervise

log = logging.getLogger("agentflow.tool_sandbox.process_backend")

BASE_PATH = "/usr/bin:/bin"
UNSAFE_WARNING = (
    "UNSAFE: the plain process backend runs tools WITHOUT isolation (host filesystem, network, processes); "
    "development only (AF_SANDBOX_BACKEND=process)"
)


@dataclass(frozen=True)
class ProcessBackendConfig:
    """Host-side settings of the process backend."""

    scratch_root: Path
    max_processes: int = 256
    max_file_bytes: int = 64 * 1024 * 1024
    python: str = field(default_factory=lambda: sys.executable)
    warn: bool = False
    """Log UNSAFE_WARNING on every call (set when the service runs with this backend)."""


class ProcessRunner:
    """The `Runner` that starts tools as ordinary child processes."""

    name = "process"

    def __init__(self, config: ProcessBackendConfig) -> None:
        self.config = config
        self._cleanups: set[asyncio.Task[tuple[int, Usage]]] = set()

    def command(self, spec: ProcessSpec) -> list[str]:
        """The argv to start: `{python}` becomes the interpreter running this service."""
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
        """Run `spec`; see `Runner.execute`. `permissions` are NOT enforced by this backend."""
        if self.config.warn:
            log.warning(UNSAFE_WARNING, extra={"fields": {"tool": tool_id}})
        limits = limits.with_defaults()
        self.config.scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="call-", dir=self.config.scratch_root.resolve()))
        env = {"PATH": BASE_PATH, "HOME": str(scratch), "LANG": "C.UTF-8", **spec.env}
        limit_plan = rlimits.plan(
            limits, max_processes=self.config.max_processes, max_file_bytes=self.config.max_file_bytes
        )
        argv = rlimits.launch_argv(self.config.python, limit_plan, self.command(spec))
        try:
            popen = process.spawn(argv, env=env, cwd=scratch)
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            message = f"cannot start {argv[0]!r}: {exc.strerror or exc}\n"
            yield Result(exit_code=process.start_error_code(exc), stderr=message)
            return
        events = supervise(
            popen,
            limits,
            arguments,
            cleanups=self._cleanups,
            on_finish=functools.partial(shutil.rmtree, scratch, True),
        )
        async with aclosing(events):
            async for event in events:
                yield event
