"""Prometheus metrics of tool calls: how they ended, what the sandbox denied, how long they took."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TOOL_CALLS = Counter("tool_calls_total", "Tool executions by how they ended", ["tool", "outcome"])
SANDBOX_DENIALS = Counter(
    "sandbox_denials_total",
    "Tool calls the sandbox refused or stopped, by reason (a limit, an isolation boundary, no sandbox)",
    ["tool", "reason"],
)
TOOL_CALL_SECONDS = Histogram(
    "tool_call_duration_seconds",
    "Wall time of a tool execution, from the request to its result",
    ["tool"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def record(tool: str, outcome: str, seconds: float, denial: str | None) -> None:
    """Count one finished (or refused) call."""
    TOOL_CALLS.labels(tool=tool, outcome=outcome).inc()
    TOOL_CALL_SECONDS.labels(tool=tool).observe(seconds)
    if denial is not None:
        SANDBOX_DENIALS.labels(tool=tool, reason=denial).inc()
