"""The approval gate: before a gated call runs, its ticket must say so.

`ApprovalGate.check` is asked by the engine before each attempt of a tool or model step, and by the agent loop
before each tool call an agent makes. When no policy rule matches, the call runs (no database read: the step
path stays as lean as without policies). When one matches, the call's ticket is looked up by its key
(`{run}/{step}/{attempt}` for a step, `{run}/{step}/{attempt}/{turn and call}` for an agent's call):

- no ticket, or one still pending: `AwaitingApproval` is raised; the engine parks the step and, once nothing
  else of the run can go on, writes the ticket, the WAITING states and the event in one transaction
  (`waiting.park`);
- approved (or expired with `on_expiry: approve`): the call runs, never gated again for that key;
- rejected, or expired with `on_expiry: reject|fail`: the gate answers the error the call ends with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentflow_runtime import context
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.db import Database
from sqlalchemy import select

from agentflow_worker.model import PlanStep, RunRecord, StepState, error_json
from agentflow_worker.policy import GateCall, PolicySet, Rule
from agentflow_worker.tables import approvals

__all__ = ["ApprovalGate", "AwaitingApproval", "ParkRequest", "step_call"]


@dataclass(frozen=True)
class ParkRequest:
    """A call that waits for a ticket (a new one unless `existing`)."""

    step_id: str
    call_key: str
    rule: Rule
    call: GateCall
    resume_state: StepState
    """What the step goes back to once every ticket of the run is decided: PENDING for a step gated before
    its attempt started, RUNNING for an agent step gated mid-attempt (it resumes that attempt)."""
    existing: bool = False


class AwaitingApproval(Exception):
    """The call may not run before its ticket is approved."""

    def __init__(self, request: ParkRequest) -> None:
        super().__init__(f"step {request.step_id} waits for approval ({request.rule.name})")
        self.request = request


GATED_KINDS = frozenset({"tool", "model"})
"""Step kinds whose call is gated by the engine (agent steps gate each tool call inside the loop)."""


def _estimate(run: RunRecord, step_id: str) -> float:
    """The planner's cost estimate of one step (0 when unknown)."""
    costs = (run.plan.cost_estimate or {}).get("steps") or {}
    return float(costs.get(step_id) or 0.0)


def step_call(run: RunRecord, step: PlanStep, params: dict[str, Any]) -> GateCall | None:
    """What the policies see of a tool or model step's call (None for other kinds)."""
    workflow = run.workflow.removeprefix("workflows/")
    if step.kind == "tool":
        arguments = params.get("arguments")
        return GateCall(
            kind="tool",
            workflow=workflow,
            step_id=step.id,
            tool=str(params.get("tool") or "").removeprefix("tools/"),
            arguments=arguments if isinstance(arguments, dict) else {},
        )
    if step.kind == "model":
        return GateCall(
            kind="model",
            workflow=workflow,
            step_id=step.id,
            model=str(params.get("model") or "local").removeprefix("models/"),
            arguments={
                k: v for k, v in params.items() if k in ("prompt", "system", "messages", "max_tokens")
            },
            cost_usd=_estimate(run, step.id),
        )
    return None


class ApprovalGate:
    """Policies plus the tickets that answer them."""

    def __init__(self, policies: PolicySet, db: Database, audit: AuditSink | None = None) -> None:
        self.policies = policies
        self.db = db
        self.audit = audit

    def parked(self, run: RunRecord, tickets: list[dict[str, Any]]) -> None:
        """Audit the tickets a run has just opened (`approval.request`)."""
        if self.audit is None:
            return
        with context.bound(context.CallContext(tenant=run.tenant, caller="worker")):
            for ticket in tickets:
                self.audit.record(
                    "approval.request",
                    f"approvals/{ticket['approval_id']}",
                    details={
                        "run": run.name,
                        "step_id": ticket["step_id"],
                        "rule": ticket["rule"],
                        "approver_roles": ticket["approver_roles"],
                        "call_key": ticket["call_key"],
                    },
                )

    def may_gate(self, run: RunRecord, step: PlanStep) -> bool:
        """Whether some rule could gate this step's call (checked before rendering its params)."""
        if step.kind not in GATED_KINDS or not self.policies:
            return False
        workflow = run.workflow.removeprefix("workflows/")
        return self.policies.may_gate_step(step.kind, workflow, step.id, _estimate(run, step.id))

    async def check(
        self, run: RunRecord, call: GateCall, call_key: str, resume_state: StepState
    ) -> dict[str, Any] | None:
        """None when the call may run; the error it ends with when its ticket says no; raises
        `AwaitingApproval` when it needs a ticket that is not decided yet."""
        if not self.policies:
            return None
        rule = self.policies.match(call)
        if rule is None:
            return None
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(approvals).where(
                        approvals.c.run_id == run.run_id, approvals.c.call_key == call_key
                    )
                )
            ).first()
        if row is None or row.state == "PENDING":
            raise AwaitingApproval(
                ParkRequest(call.step_id, call_key, rule, call, resume_state, existing=row is not None)
            )
        name = f"approvals/{row.approval_id}"
        meta = {"approval": name, "rule": str(row.rule)}
        if row.state == "APPROVED" or (row.state == "EXPIRED" and row.on_expiry == "approve"):
            return None
        if row.state == "REJECTED":
            by = f" by {row.decided_by}" if row.decided_by else ""
            why = f": {row.comment}" if row.comment else ""
            return error_json(
                "PERMISSION_DENIED",
                f"step {call.step_id}: {name} was rejected{by}{why}",
                "APPROVAL_REJECTED",
                **meta,
            )
        code = "PERMISSION_DENIED" if row.on_expiry == "reject" else "DEADLINE_EXCEEDED"
        return error_json(
            code,
            f"step {call.step_id}: {name} expired undecided (on_expiry: {row.on_expiry})",
            "APPROVAL_EXPIRED",
            **meta,
        )
