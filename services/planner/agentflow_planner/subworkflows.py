"""Sub-workflows: a dag step `workflow: <id>[@version]` is inlined into the plan of the workflow using it.

    - id: research
      workflow: fan-out@2          # or `fan-out`: the latest version when this workflow version is stored
      input: {topic: "{{ input.subject }}", critique: true}

The stored plan of the pinned version (itself already inlined) is copied with namespaced step ids:

- `research/_input`: a value step carrying the sub-workflow's input (the step's `input`, rendered in the outer
  scope), with the step's `needs`, `when` and `join`, and the pin (`workflow`, `workflow_version`) in its
  params, so the plan hash changes when the pin does;
- `research/<inner>` for each inner step: its templates are rewritten (`steps.<x>` -> `steps["research/<x>"]`,
  `states.<x>` -> `states["research/<x>"]`, `input.<f>` -> `steps["research/_input"].output.<f>`) and steps
  without needs need `research/_input`;
- `research`: a value step (needing every inner step, `join: any`) whose value is the inner workflow's output
  (or every inner step's output when it declares none): what the outer workflow reads as
  `steps.research.output`.

A reference to an unknown workflow or version, input missing a field the sub-workflow requires, and a cycle
(the workflow being stored appears among the workflows a sub-workflow inlines) are violations of the step.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from agentflow_runtime import templates
from agentflow_runtime.errors import NotFound

from .compiler import Plan
from .definition import WorkflowDefinition
from .step_definition import StepDefinition
from .step_params import WORKFLOW_REF, StepKind
from .violations import Violation

__all__ = ["INPUT_STEP", "WORKFLOW_REF", "Loader", "inline_workflows"]

INPUT_STEP = "_input"
_NOT_ON_WORKFLOW_STEPS = frozenset({"retry", "timeout_seconds", "on_error"})

Loader = Callable[[str, int], Awaitable[tuple[Plan, dict[str, Any] | None]]]
"""(workflow id, version or 0 for the latest) -> its stored plan and input schema; raises NotFound."""


def _included(plan: Plan) -> set[str]:
    """The workflows a plan is made of: its own and every inlined one (named by their input steps)."""
    found = {plan.workflow.removeprefix("workflows/")}
    for step in plan.steps:
        if step.id.endswith(f"/{INPUT_STEP}") and isinstance(step.params.get("workflow"), str):
            found.add(str(step.params["workflow"]).removeprefix("workflows/"))
    return found


def _renamer(prefix: str) -> Callable[[tuple[templates.PathPart, ...]], tuple[templates.PathPart, ...]]:
    def rename(parts: tuple[templates.PathPart, ...]) -> tuple[templates.PathPart, ...]:
        root = parts[0]
        if root in ("steps", "states") and len(parts) >= 2 and isinstance(parts[1], str):
            return (root, f"{prefix}/{parts[1]}", *parts[2:])
        if root == "input":
            return ("steps", f"{prefix}/{INPUT_STEP}", "output", *parts[1:])
        return parts

    return rename


def _expand(step: StepDefinition, plan: Plan, run_input: dict[str, Any]) -> list[StepDefinition]:
    prefix = step.id
    rename = _renamer(prefix)
    input_id = f"{prefix}/{INPUT_STEP}"
    input_params: dict[str, Any] = {
        "value": run_input,
        "workflow": plan.workflow,
        "workflow_version": plan.workflow_version,
    }
    for key in ("when", "join"):
        if key in step.params:
            input_params[key] = step.params[key]
    expanded = [StepDefinition(input_id, StepKind.VALUE, step.needs, input_params, step.description)]
    for inner in plan.steps:
        needs = tuple(f"{prefix}/{n}" for n in inner.needs) or (input_id,)
        params = templates.rewrite_paths(inner.params, rename)
        expanded.append(StepDefinition(f"{prefix}/{inner.id}", inner.kind, needs, params))
    if plan.output is not None:
        value = templates.rewrite_paths(plan.output, rename)
    else:
        value = {s.id: "{{ steps[" + json.dumps(f"{prefix}/{s.id}") + "].output }}" for s in plan.steps}
    inner_ids = tuple(sorted(f"{prefix}/{s.id}" for s in plan.steps)) or (input_id,)
    expanded.append(StepDefinition(prefix, StepKind.VALUE, inner_ids, {"value": value, "join": "any"}))
    return expanded


async def inline_workflows(
    definition: WorkflowDefinition, workflow_id: str, load: Loader
) -> tuple[WorkflowDefinition | None, list[Violation]]:
    """The definition with every workflow step inlined, or None and every violation."""
    if not any(step.kind is StepKind.WORKFLOW for step in definition.steps):
        return definition, []
    raw_steps = definition.document.get("steps") or []
    positions = {s.get("id"): i for i, s in enumerate(raw_steps) if isinstance(s, Mapping)}
    violations: list[Violation] = []
    steps: list[StepDefinition] = []
    for step in definition.steps:
        if step.kind is not StepKind.WORKFLOW:
            steps.append(step)
            continue
        where = f"steps[{positions.get(step.id, 0)}]"
        for key in sorted(_NOT_ON_WORKFLOW_STEPS & set(step.params)):
            violations.append(
                Violation(f"{where}.{key}", "not supported on a sub-workflow step; set it on its inner steps")
            )
        match = WORKFLOW_REF.fullmatch(str(step.params["workflow"]))
        if match is None:  # reported by the definition checks already
            continue
        ref_id, version = match.group("id"), int(match.group("version") or 0)
        if ref_id == workflow_id:
            violations.append(Violation(f"{where}.workflow", f"a cycle: {workflow_id} -> {workflow_id}"))
            continue
        try:
            plan, schema = await load(ref_id, version)
        except NotFound:
            what = f"workflow {ref_id!r}" + (f" has no version {version}" if version else " does not exist")
            violations.append(Violation(f"{where}.workflow", what))
            continue
        if workflow_id in _included(plan):
            violations.append(
                Violation(
                    f"{where}.workflow",
                    f"a cycle: {workflow_id} -> {ref_id}@{plan.workflow_version} -> ... -> {workflow_id}",
                )
            )
            continue
        run_input: dict[str, Any] = step.params.get("input") or {}
        required = (schema or {}).get("required") or []
        for name in required:
            if name not in run_input:
                violations.append(
                    Violation(f"{where}.input", f"missing {name!r}, required by workflow {ref_id!r}")
                )
        steps.extend(_expand(step, plan, run_input))
    if violations:
        return None, violations
    return replace(definition, steps=tuple(steps)), []
