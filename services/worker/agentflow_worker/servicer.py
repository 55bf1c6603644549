"""RunService and ApprovalService: protobuf in, domain call, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from agentflow.approvals.v1 import approvals_pb2, approvals_pb2_grpc
from agentflow.runs.v1 import runs_pb2, runs_pb2_grpc
from agentflow_runtime import context
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.errors import FailedPrecondition, PermissionDenied
from agentflow_runtime.pagination import clamp_page_size, decode_token, encode_token
from agentflow_runtime.protojson import dict_from_struct, struct_from_dict, timestamp

from agentflow_worker.approvals import Approvals
from agentflow_worker.budget import Budget
from agentflow_worker.convert import event_pb, replay_pb, run_pb
from agentflow_worker.runs import Runs

Ctx = grpc.aio.ServicerContext[Any, Any]


class RunServicer(runs_pb2_grpc.RunServiceServicer):
    def __init__(self, runs: Runs, audit: AuditSink) -> None:
        self.runs = runs
        self.audit = audit

    async def StartRun(self, request: runs_pb2.StartRunRequest, ctx: Ctx) -> runs_pb2.Run:
        tenant = context.current().tenant
        run, created = await self.runs.start(
            tenant,
            request.workflow,
            request.workflow_version,
            dict_from_struct(request.input),
            dict(request.labels),
            request.request_id,
            Budget(request.budget.max_cost_usd, request.budget.max_tokens)
            if request.HasField("budget")
            else None,
        )
        if created:
            self.audit.record(
                "run.start", run.name, details={"workflow": run.workflow, "plan_hash": run.plan_hash}
            )
        return run_pb(run)

    async def GetRun(self, request: runs_pb2.GetRunRequest, ctx: Ctx) -> runs_pb2.Run:
        return run_pb(await self.runs.get(context.current().tenant, request.name))

    async def ListRuns(self, request: runs_pb2.ListRunsRequest, ctx: Ctx) -> runs_pb2.ListRunsResponse:
        size = clamp_page_size(request.page_size)
        offset = decode_token(request.page_token)
        found = await self.runs.store.list_runs(context.current().tenant, offset, size + 1, request.workflow)
        reply = runs_pb2.ListRunsResponse(runs=[run_pb(r, with_steps=False) for r in found[:size]])
        if len(found) > size:
            reply.next_page_token = encode_token(offset + size)
        return reply

    async def CancelRun(self, request: runs_pb2.CancelRunRequest, ctx: Ctx) -> runs_pb2.Run:
        run = await self.runs.cancel(context.current().tenant, request.name, request.reason)
        self.audit.record("run.cancel", run.name, details={"reason": request.reason})
        return run_pb(run)

    async def ReplayRun(self, request: runs_pb2.ReplayRunRequest, ctx: Ctx) -> runs_pb2.ReplayRunResponse:
        report = await self.runs.replay(context.current().tenant, request.name, request.workflow_version)
        self.audit.record("run.replay", request.name, details={"matches": report.matches})
        return replay_pb(report)

    async def WatchRun(self, request: runs_pb2.WatchRunRequest, ctx: Ctx) -> AsyncIterator[runs_pb2.RunEvent]:
        async for event in self.runs.watch(context.current().tenant, request.name, request.after_seq):
            yield event_pb(event)


class ApprovalServicer(approvals_pb2_grpc.ApprovalServiceServicer):
    def __init__(self, approvals: Approvals, audit: AuditSink) -> None:
        self.approvals = approvals
        self.audit = audit

    async def GetApproval(
        self, request: approvals_pb2.GetApprovalRequest, ctx: Ctx
    ) -> approvals_pb2.Approval:
        return _approval_pb(await self.approvals.get(context.current().tenant, request.name))

    async def ListApprovals(
        self, request: approvals_pb2.ListApprovalsRequest, ctx: Ctx
    ) -> approvals_pb2.ListApprovalsResponse:
        size = clamp_page_size(request.page_size)
        offset = decode_token(request.page_token)
        state = "" if request.state == 0 else approvals_pb2.ApprovalState.Name(request.state).split("_")[-1]
        found = await self.approvals.list_tickets(
            context.current().tenant, offset, size + 1, state, request.run
        )
        reply = approvals_pb2.ListApprovalsResponse(approvals=[_approval_pb(a) for a in found[:size]])
        if len(found) > size:
            reply.next_page_token = encode_token(offset + size)
        return reply

    async def DecideApproval(
        self, request: approvals_pb2.DecideApprovalRequest, ctx: Ctx
    ) -> approvals_pb2.Approval:
        call = context.current()
        try:
            ticket = await self.approvals.decide(
                call.tenant, call.role, call.principal, request.name, request.approve, request.comment
            )
        except (PermissionDenied, FailedPrecondition) as exc:
            # A refused decision is evidence too: who tried, on which ticket, and why it was refused.
            self.audit.record(
                "approval.decide",
                request.name,
                outcome="denied",
                details={"approve": request.approve, "role": call.role, "reason": exc.reason},
            )
            raise
        self.audit.record(
            "approval.decide",
            request.name,
            details={
                "approve": request.approve,
                "comment": request.comment,
                "run": f"runs/{ticket['run_id']}",
                "rule": ticket["rule"],
                "role": call.role,
            },
        )
        return _approval_pb(ticket)


_EXPIRY = {
    "fail": approvals_pb2.EXPIRY_ACTION_FAIL,
    "approve": approvals_pb2.EXPIRY_ACTION_APPROVE,
    "reject": approvals_pb2.EXPIRY_ACTION_REJECT,
}


def _approval_pb(row: dict[str, Any]) -> approvals_pb2.Approval:
    message = approvals_pb2.Approval(
        name=f"approvals/{row['approval_id']}",
        run=f"runs/{row['run_id']}",
        step_id=row["step_id"],
        state=approvals_pb2.ApprovalState.Value(f"APPROVAL_STATE_{row['state']}"),
        request=struct_from_dict(row["request"]),
        decided_by=row["decided_by"] or "",
        comment=row["comment"] or "",
        create_time=timestamp(row["create_time"]),
        rule=row.get("rule") or "",
        approver_roles=list(row.get("approver_roles") or []),
        on_expiry=_EXPIRY.get(str(row.get("on_expiry")), approvals_pb2.EXPIRY_ACTION_FAIL),
    )
    if row["expire_time"]:
        message.expire_time.CopyFrom(timestamp(row["expire_time"]))
    if row["decide_time"]:
        message.decide_time.CopyFrom(timestamp(row["decide_time"]))
    return message
