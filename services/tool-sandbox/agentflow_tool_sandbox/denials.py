"""Why the sandbox refused or stopped a call: the error it raises before starting, and the limit a
finished call ran into (for the audit record and `sandbox_denials_total`)."""

from __future__ import annotations

from agentflow_runtime.errors import FailedPrecondition

from agentflow_tool_sandbox.events import Result

SANDBOX_UNAVAILABLE = "SANDBOX_UNAVAILABLE"
EGRESS_UNAVAILABLE = "EGRESS_UNAVAILABLE"

SIGXCPU = 24
SIGKILL = 9

_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")
_PROCESS_MARKERS = ("Resource temporarily unavailable", "Cannot fork", "can't start new thread")
_NETWORK_MARKERS = (
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Name or service not known",
    "No address associated with hostname",
)
_ISOLATION_MARKERS = ("Read-only file system", "Permission denied", "Operation not permitted")


class SandboxDenied(FailedPrecondition):
    """The sandbox refuses to run the call (it cannot isolate it, or cannot grant what the profile asks)."""


def limit_hit(result: Result) -> str | None:
    """The limit or isolation boundary a finished call ran into, None when there is no sign of one.

    Wall time and output cap are certain (the backend enforced them); CPU is the SIGXCPU signal; memory,
    process count, network and other isolation denials (EROFS, EACCES, EPERM) are read from the error the
    tool printed (best effort: a tool
    may print anything, so this only labels the audit record and the metric, it decides nothing).
    """
    if result.timed_out:
        return "wall_time"
    if result.truncated:
        return "output_bytes"
    if result.exit_code == -SIGXCPU:
        return "cpu_seconds"
    if result.exit_code == 0 or result.cancelled:
        return None
    tail = result.stderr[-4096:]
    if any(marker in tail for marker in _MEMORY_MARKERS):
        return "memory_bytes"
    if any(marker in tail for marker in _PROCESS_MARKERS):
        return "max_processes"
    if any(marker in tail for marker in _NETWORK_MARKERS):
        return "network"
    if any(marker in tail for marker in _ISOLATION_MARKERS):
        return "isolation"
    return None
