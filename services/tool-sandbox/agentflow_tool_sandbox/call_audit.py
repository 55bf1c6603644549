"""One audit event and the metrics of every ExecuteTool call, whatever became of it.

The event is `tool.execute` on the tool's resource name; the audit service adds the tenant and principal
from the call context, the details carry the rest: the calling mesh service, run and step, the argument
digest (never the arguments), the decision (`allow` or `deny`, with its reason), the outcome, and for an
execution its exit, limits hit and resource usage. Outcomes: `ok`, `failed` (the tool failed), `denied`
(refused before running, or stopped by a limit of its profile), `cancelled`, `error`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentflow_runtime import context

from agentflow_tool_sandbox import call_metrics
from agentflow_tool_sandbox.denials import limit_hit
from agentflow_tool_sandbox.events import Result

ACTION = "tool.execute"


class Audit(Protocol):
    """Where events go (`agentflow_runtime.audit.AuditSink`)."""

    def record(
        self, action: str, resource: str, outcome: str = "ok", details: dict[str, Any] | None = None
    ) -> None: ...


@dataclass
class ToolCall:
    """The call being audited."""

    tool_id: str
    run: str
    step_id: str
    args_digest: str
    started: float = field(default_factory=time.monotonic)

    def details(self) -> dict[str, Any]:
        return {
            "tool": self.tool_id,
            "caller": context.current().caller,
            "run": self.run,
            "step_id": self.step_id,
            "args_digest": self.args_digest,
        }


def denied(audit: Audit, call: ToolCall, reason: str, *, sandbox: bool) -> None:
    """The call was refused before anything ran; `sandbox` when the sandbox (not policy) refused it."""
    details = {**call.details(), "decision": "deny", "reason": reason}
    audit.record(ACTION, f"tools/{call.tool_id}", "denied", details=details)
    call_metrics.record(call.tool_id, "denied", time.monotonic() - call.started, reason if sandbox else None)


def finished(audit: Audit, call: ToolCall, result: Result | None, ended: str) -> None:
    """The call ran: its result, or how it ended without one (`cancelled`, `error`)."""
    details = {**call.details(), "decision": "allow"}
    denial: str | None = None
    if result is None:
        outcome = ended
    else:
        denial = None if result.replayed else limit_hit(result)
        outcome = "ok" if result.succeeded else "denied" if denial else "failed"
        details.update(
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            truncated=result.truncated,
            cancelled=result.cancelled,
            replayed=result.replayed,
            cpu_seconds=result.usage.cpu_seconds,
            max_rss_bytes=result.usage.max_rss_bytes,
            wall_seconds=result.usage.wall_seconds,
        )
        if denial is not None:
            details["denial"] = denial
    audit.record(ACTION, f"tools/{call.tool_id}", outcome, details=details)
    call_metrics.record(call.tool_id, outcome, time.monotonic() - call.started, denial)
