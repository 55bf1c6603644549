"""Resource limits for a tool process, applied by the launcher (`launch.py`) before it execs the tool."""

from __future__ import annotations

import math
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentflow_tool_sandbox.spec import Limits

LAUNCHER = Path(__file__).with_name("launch.py")

_NAMES = {
    resource.RLIMIT_CPU: "RLIMIT_CPU",
    resource.RLIMIT_AS: "RLIMIT_AS",
    resource.RLIMIT_NPROC: "RLIMIT_NPROC",
    resource.RLIMIT_FSIZE: "RLIMIT_FSIZE",
    resource.RLIMIT_CORE: "RLIMIT_CORE",
}


@dataclass(frozen=True)
class Rlimit:
    """One `setrlimit` call: soft and hard values (hard never above the current hard limit)."""

    resource: int
    soft: int
    hard: int

    def argument(self) -> str:
        """This limit as a launcher argument, `RLIMIT_X=SOFT:HARD`."""
        return f"{_NAMES[self.resource]}={self.soft}:{self.hard}"


def plan(limits: Limits, *, max_processes: int, max_file_bytes: int) -> list[Rlimit]:
    """The rlimits for `limits`: CPU (SIGXCPU at the limit, SIGKILL a second later), address space,
    processes, file size and no core dumps."""
    cpu = max(1, math.ceil(limits.cpu_seconds))
    return [
        Rlimit(resource.RLIMIT_CPU, cpu, cpu + 1),
        Rlimit(resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        Rlimit(resource.RLIMIT_NPROC, max_processes, max_processes),
        Rlimit(resource.RLIMIT_FSIZE, max_file_bytes, max_file_bytes),
        Rlimit(resource.RLIMIT_CORE, 0, 0),
    ]


def launch_argv(python: str, rlimits: Sequence[Rlimit], argv: Sequence[str]) -> list[str]:
    """The argv that applies `rlimits` and then execs `argv` (isolated interpreter, no site import)."""
    return [python, "-I", "-S", str(LAUNCHER), *(r.argument() for r in rlimits), "--", *argv]
