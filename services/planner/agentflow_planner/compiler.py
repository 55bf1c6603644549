"""Compiles a validated workflow definition into a plan: steps in a deterministic topological order, stable
step ids (the definition's) and a plan hash that depends only on what the plan does.

`plan_hash` is the sha256 of the canonical JSON (sorted keys, no whitespace, integral floats written as
integers) of `{workflow, steps: [{id, kind, needs (sorted), params}], output}`; the version is not part of
it, so re-storing the same definition gives the same hash, whatever the key order of its source.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from . import graph
from .definition import WorkflowDefinition
from .step_params import StepKind

__all__ = ["Plan", "PlanStep", "canonical_json", "compile_plan", "plan_from_dict", "workflow_name"]


def workflow_name(workflow_id: str) -> str:
    """The resource name of a workflow: `workflows/{id}`."""
    return f"workflows/{workflow_id}"


@dataclass(frozen=True)
class PlanStep:
    """One node of the plan graph; `params` are normalised and may hold templates."""

    id: str
    kind: StepKind
    needs: tuple[str, ...]
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind.value, "needs": list(self.needs), "params": self.params}


@dataclass(frozen=True)
class Plan:
    """The executable form of a workflow version."""

    workflow: str
    workflow_version: int
    plan_hash: str
    steps: tuple[PlanStep, ...]
    output: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "workflow_version": self.workflow_version,
            "plan_hash": self.plan_hash,
            "steps": [step.to_dict() for step in self.steps],
            "output": self.output,
        }


def _normalize(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(key): _normalize(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept, integral floats as integers."""
    return json.dumps(_normalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compile_plan(definition: WorkflowDefinition, version: int = 0, workflow_id: str | None = None) -> Plan:
    """The plan of a validated definition, for `version` of workflow `workflow_id` (default: its `id`)."""
    workflow_id = workflow_id or definition.id
    by_id = {step.id: step for step in definition.steps}
    needs = {step.id: step.needs for step in definition.steps}
    order = graph.topological_order([step.id for step in definition.steps], needs)
    steps = tuple(
        PlanStep(
            id=step_id,
            kind=by_id[step_id].kind,
            needs=tuple(sorted(by_id[step_id].needs)),
            params=_normalize(by_id[step_id].params),
        )
        for step_id in order
    )
    output = _normalize(definition.output)
    hashed = {
        "workflow": workflow_id,
        "steps": [step.to_dict() for step in steps],
        "output": output,
    }
    plan_hash = hashlib.sha256(canonical_json(hashed).encode("utf-8")).hexdigest()
    return Plan(workflow_name(workflow_id), version, plan_hash, steps, output)


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """Rebuilds a plan stored with `Plan.to_dict`."""
    steps = tuple(
        PlanStep(step["id"], StepKind(step["kind"]), tuple(step["needs"]), dict(step["params"]))
        for step in data["steps"]
    )
    return Plan(data["workflow"], int(data["workflow_version"]), data["plan_hash"], steps, data["output"])
