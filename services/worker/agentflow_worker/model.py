"""Domain records of the worker (no gRPC, no SQL types)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class RunState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    WAITING = "WAITING"
    """Paused for approval tickets: no worker holds it, nothing claims it until they are decided."""

    @property
    def final(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class StepState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    WAITING = "WAITING"


class EventType(enum.StrEnum):
    RUN_CREATED = "RUN_CREATED"
    RUN_STARTED = "RUN_STARTED"
    STEP_STARTED = "STEP_STARTED"
    TOOL_OUTPUT = "TOOL_OUTPUT"
    MODEL_DELTA = "MODEL_DELTA"
    STEP_SUCCEEDED = "STEP_SUCCEEDED"
    STEP_FAILED = "STEP_FAILED"
    STEP_SKIPPED = "STEP_SKIPPED"
    RUN_SUCCEEDED = "RUN_SUCCEEDED"
    RUN_FAILED = "RUN_FAILED"
    RUN_CANCELLED = "RUN_CANCELLED"
    AGENT_TURN = "AGENT_TURN"
    AGENT_HANDOFF = "AGENT_HANDOFF"
    APPROVAL_REQUESTED = "APPROVAL_REQUESTED"
    APPROVAL_DECIDED = "APPROVAL_DECIDED"


@dataclass(frozen=True)
class PlanStep:
    id: str
    kind: str
    needs: tuple[str, ...]
    params: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    workflow: str
    workflow_version: int
    plan_hash: str
    steps: tuple[PlanStep, ...]
    output: Any = None
    cost_estimate: dict[str, Any] | None = None
    """The planner's upper bound: input_tokens, output_tokens, cost_usd, unpriced_models."""

    def to_json(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "workflow_version": self.workflow_version,
            "plan_hash": self.plan_hash,
            "steps": [
                {"id": s.id, "kind": s.kind, "needs": list(s.needs), "params": s.params} for s in self.steps
            ],
            "output": self.output,
            "cost_estimate": self.cost_estimate,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            workflow=data["workflow"],
            workflow_version=int(data["workflow_version"]),
            plan_hash=data["plan_hash"],
            steps=tuple(
                PlanStep(s["id"], s["kind"], tuple(s.get("needs", ())), dict(s.get("params") or {}))
                for s in data["steps"]
            ),
            output=data.get("output"),
            cost_estimate=data.get("cost_estimate"),
        )


@dataclass
class StepRecord:
    step_id: str
    kind: str
    state: StepState
    output: Any = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    approval: str = ""
    """The newest approval ticket of the step's calls (`approvals/{id}`); filled for reads only."""


@dataclass
class RunRecord:
    run_id: str
    tenant: str
    workflow: str
    workflow_version: int
    plan_hash: str
    plan: Plan
    state: RunState
    input: dict[str, Any]
    labels: dict[str, str]
    create_time: datetime
    output: Any = None
    error: dict[str, Any] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    last_seq: int = 0
    cancel_requested: bool = False
    cancel_reason: str = ""
    end_time: datetime | None = None
    steps: list[StepRecord] = field(default_factory=list)
    budget: dict[str, Any] | None = None
    """The run's cap ({max_cost_usd, max_tokens}), if any."""
    pending_approvals: list[str] = field(default_factory=list)
    """Tickets the run waits for (`approvals/{id}`); filled for reads only."""

    @property
    def name(self) -> str:
        return f"runs/{self.run_id}"


@dataclass(frozen=True)
class Event:
    run_id: str
    seq: int
    type: EventType
    step_id: str
    run_state: RunState
    data: dict[str, Any]
    create_time: datetime

    def row(self) -> dict[str, Any]:
        """The event as a `run_events` row (column -> value, before any driver-specific encoding)."""
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "type": self.type.value,
            "step_id": self.step_id,
            "run_state": self.run_state.value,
            "data": self.data,
            "create_time": self.create_time,
        }


def error_json(code: str, message: str, reason: str = "", **metadata: str) -> dict[str, Any]:
    """A run/step error, shaped like google.rpc.Status for the API."""
    return {"code": code, "message": message, "reason": reason or code, "metadata": metadata}
