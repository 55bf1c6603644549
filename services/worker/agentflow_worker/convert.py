"""Domain records -> protobuf messages (the servicer's only translation)."""

from __future__ import annotations

from typing import Any

import grpc
from agentflow.common.v1 import common_pb2
from agentflow.runs.v1 import runs_pb2
from agentflow_runtime.errors import AgentFlowError, error_for_code
from agentflow_runtime.protojson import struct_from_dict, timestamp, value_from_py
from google.rpc import status_pb2

from agentflow_worker.budget import Budget, spent_usd
from agentflow_worker.model import Event, RunRecord, StepRecord
from agentflow_worker.replay import ReplayReport


def status(error: dict[str, Any] | None) -> status_pb2.Status | None:
    """A google.rpc.Status (with ErrorInfo) for a stored run/step error."""
    if not error:
        return None
    code = getattr(grpc.StatusCode, str(error.get("code", "UNKNOWN")), grpc.StatusCode.UNKNOWN)
    err: AgentFlowError = error_for_code(code)(
        str(error.get("message", "")),
        reason=str(error.get("reason") or code.name),
        metadata={str(k): str(v) for k, v in (error.get("metadata") or {}).items()},
        violations=[(v["field"], v["description"]) for v in error.get("violations", [])],
    )
    err.code = code
    return err.to_status()


def step_pb(step: StepRecord) -> runs_pb2.StepRun:
    message = runs_pb2.StepRun(
        step_id=step.step_id,
        kind=step.kind,
        state=runs_pb2.StepState.Value(f"STEP_STATE_{step.state.value}"),
        attempts=step.attempts,
        approval=step.approval,
    )
    if step.output is not None:
        message.output.CopyFrom(value_from_py(step.output))
    if (err := status(step.error)) is not None:
        message.error.CopyFrom(err)
    if step.start_time:
        message.start_time.CopyFrom(timestamp(step.start_time))
    if step.end_time:
        message.end_time.CopyFrom(timestamp(step.end_time))
    return message


def run_pb(run: RunRecord, with_steps: bool = True) -> runs_pb2.Run:
    message = runs_pb2.Run(
        name=run.name,
        workflow=run.workflow,
        workflow_version=run.workflow_version,
        plan_hash=run.plan_hash,
        state=runs_pb2.RunState.Value(f"RUN_STATE_{run.state.value}"),
        input=struct_from_dict(run.input),
        usage=common_pb2.TokenUsage(
            input_tokens=run.input_tokens,
            output_tokens=run.output_tokens,
            total_tokens=run.input_tokens + run.output_tokens,
        ),
        last_event_seq=run.last_seq,
        create_time=timestamp(run.create_time),
        labels=run.labels,
        pending_approvals=run.pending_approvals,
    )
    if run.output is not None:
        message.output.CopyFrom(value_from_py(run.output))
    if (err := status(run.error)) is not None:
        message.error.CopyFrom(err)
    if run.end_time:
        message.end_time.CopyFrom(timestamp(run.end_time))
    if (budget := Budget.from_json(run.budget)) is not None:
        message.budget.CopyFrom(
            runs_pb2.Budget(max_cost_usd=budget.max_cost_usd, max_tokens=budget.max_tokens)
        )
    if with_steps:
        message.cost_usd = spent_usd(run.steps)
        message.steps.extend(step_pb(s) for s in run.steps)
    return message


def event_pb(event: Event) -> runs_pb2.RunEvent:
    return runs_pb2.RunEvent(
        seq=event.seq,
        run=f"runs/{event.run_id}",
        type=runs_pb2.RunEventType.Value(f"RUN_EVENT_TYPE_{event.type.value}"),
        step_id=event.step_id,
        run_state=runs_pb2.RunState.Value(f"RUN_STATE_{event.run_state.value}"),
        data=struct_from_dict(event.data),
        create_time=timestamp(event.create_time),
    )


def replay_pb(report: ReplayReport) -> runs_pb2.ReplayRunResponse:
    return runs_pb2.ReplayRunResponse(
        matches=report.matches,
        journaled_plan_hash=report.journaled_plan_hash,
        replayed_plan_hash=report.replayed_plan_hash,
        replayed_workflow_version=report.replayed_workflow_version,
        steps=[
            runs_pb2.StepReplay(
                step_id=s.step_id,
                verdict=runs_pb2.ReplayVerdict.Value(f"REPLAY_VERDICT_{s.verdict.value}"),
                detail=s.detail,
            )
            for s in report.steps
        ],
    )
