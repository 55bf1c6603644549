"""Pins agent definitions into a workflow's agent steps, so the plan (and its hash) carries them.

An agent step's params become `{agent, input, agents: {name: definition}}` with every agent the step's agent
reaches through handoffs. The worker runs the step from these pinned definitions alone: a run is not changed
by a later edit of `catalog/agents/`, and a replay sees exactly what ran. An unknown agent, or a reached agent
with problems, is a violation of the step (`steps[i].agent`), one per problem.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .agent_catalog import AgentCatalog
from .definition import WorkflowDefinition
from .step_params import StepKind
from .violations import Violation

__all__ = ["pin_agents"]


def pin_agents(
    definition: WorkflowDefinition, catalog: AgentCatalog | None
) -> tuple[WorkflowDefinition | None, list[Violation]]:
    """The definition with its agent steps pinned, or None and every violation."""
    if not any(step.kind is StepKind.AGENT for step in definition.steps):
        return definition, []
    catalog = catalog or AgentCatalog()
    positions = _positions(definition)
    violations: list[Violation] = []
    steps = []
    for step in definition.steps:
        if step.kind is not StepKind.AGENT:
            steps.append(step)
            continue
        where = f"{step.source or f'steps[{positions.get(step.id, 0)}]'}.agent"
        name = str(step.params.get("agent"))
        if name not in catalog.agents:
            known = ", ".join(sorted(catalog.agents)) or "none"
            violations.append(Violation(where, f"unknown agent {name!r} (catalog agents: {known})"))
            continue
        reached = catalog.closure(name)
        problems = [
            Violation(where, f"agent {agent!r}: {p.field.removeprefix(f'agents/{agent}.')}: {p.description}")
            for agent in reached
            for p in catalog.problems.get(agent, [])
        ]
        violations.extend(problems)
        pinned = {agent: catalog.agents[agent] for agent in reached}
        violations.extend(
            Violation(where, f"agent {path}: contains '{{{{' (agent definitions are literal, not templates)")
            for path in _templated(pinned, "")
        )
        steps.append(replace(step, params={**step.params, "agents": pinned}))
    if violations:
        return None, list(dict.fromkeys(violations))  # an fsm state's visits share their violations
    return replace(definition, steps=tuple(steps)), []


def _templated(value: Any, path: str) -> list[str]:
    """Paths of strings holding `{{`: the worker renders a step's params, so pinned text must not."""
    if isinstance(value, str):
        return [path] if "{{" in value else []
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _templated(item, f"{path}.{key}" if path else key)]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _templated(item, f"{path}[{i}]")]
    return []


def _positions(definition: WorkflowDefinition) -> dict[str, int]:
    """Each step's index in the source document (for field paths)."""
    raw = definition.document.get("steps") or []
    return {str(step.get("id")): i for i, step in enumerate(raw) if isinstance(step, dict) and step.get("id")}
