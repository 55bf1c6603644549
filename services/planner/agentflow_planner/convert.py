"""Protobuf <-> domain conversions for the planner (the only module besides the servicer that sees protos)."""

from __future__ import annotations

from typing import Any

from agentflow.workflows.v1 import workflows_pb2
from agentflow_runtime.protojson import dict_from_struct, struct_from_dict, timestamp, value_from_py

from .compiler import Plan, workflow_name
from .estimate import CostEstimate
from .step_params import StepKind
from .store import StoredWorkflow
from .violations import Violation

__all__ = ["plan_to_proto", "source_of", "violation_to_proto", "workflow_to_proto"]

_KINDS = {
    StepKind.MODEL: workflows_pb2.STEP_KIND_MODEL,
    StepKind.TOOL: workflows_pb2.STEP_KIND_TOOL,
    StepKind.MEMORY: workflows_pb2.STEP_KIND_MEMORY,
    StepKind.AGENT: workflows_pb2.STEP_KIND_AGENT,
    StepKind.VALUE: workflows_pb2.STEP_KIND_VALUE,
}


def source_of(workflow: workflows_pb2.Workflow) -> str | dict[str, Any] | None:
    """The definition a request carries: `source` text, else the `definition` Struct, else None."""
    if workflow.source.strip():
        return workflow.source
    if workflow.HasField("definition") and workflow.definition.fields:
        return dict_from_struct(workflow.definition)
    return None


def workflow_to_proto(record: StoredWorkflow) -> workflows_pb2.Workflow:
    return workflows_pb2.Workflow(
        name=workflow_name(record.workflow_id),
        display_name=record.display_name,
        description=record.description,
        definition=struct_from_dict(record.definition),
        version=record.version,
        plan_hash=record.plan_hash,
        create_time=timestamp(record.create_time),
        update_time=timestamp(record.update_time),
    )


def plan_to_proto(plan: Plan, cost: CostEstimate | None = None) -> workflows_pb2.Plan:
    message = workflows_pb2.Plan(
        workflow=plan.workflow,
        workflow_version=plan.workflow_version,
        plan_hash=plan.plan_hash,
        steps=[
            workflows_pb2.PlanStep(
                id=step.id, kind=_KINDS[step.kind], needs=step.needs, params=struct_from_dict(step.params)
            )
            for step in plan.steps
        ],
    )
    if plan.output is not None:
        message.output.CopyFrom(value_from_py(plan.output))
    if cost is not None:
        message.cost_estimate.CopyFrom(estimate_to_proto(cost))
    return message


def estimate_to_proto(cost: CostEstimate) -> workflows_pb2.CostEstimate:
    return workflows_pb2.CostEstimate(
        input_tokens=cost.input_tokens,
        output_tokens=cost.output_tokens,
        cost_usd=cost.cost_usd,
        steps=[
            workflows_pb2.StepCostEstimate(
                step_id=s.step_id,
                model=s.model,
                input_tokens=s.input_tokens,
                output_tokens=s.output_tokens,
                cost_usd=s.cost_usd,
            )
            for s in cost.steps
        ],
        unpriced_models=cost.unpriced_models,
    )


def violation_to_proto(violation: Violation) -> workflows_pb2.Violation:
    return workflows_pb2.Violation(field=violation.field, description=violation.description)
