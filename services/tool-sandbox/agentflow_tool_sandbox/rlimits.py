"""Resource limits for a tool process, computed in the parent and applied in the child before exec."""

from __future__ import annotations

import math
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agentflow_tool_sandbox.spec import Limits


@dataclass(frozen=True)
class Rlimit:
    """One `setrlimit` call: soft and hard values (hard never above the current hard limit)."""

    resource: int
    soft: int
    hard: int


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


def applier(rlimits: Sequence[Rlimit]) -> Callable[[], None]:
    """A `preexec_fn` applying `rlimits`; it only lowers limits, so it works unprivileged."""
    frozen = tuple(rlimits)

    def apply() -> None:
        for item in frozen:
            _, current_hard = resource.getrlimit(item.resource)
            hard = item.hard if current_hard == resource.RLIM_INFINITY else min(item.hard, current_hard)
            resource.setrlimit(item.resource, (min(item.soft, hard), hard))

    return apply
