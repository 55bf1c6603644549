"""Cost preflight: an upper bound of the model tokens and money a plan spends, from catalog prices.

Per model step: input tokens are the prompt's fixed text plus, for each `{{ }}` in it, the estimated output of
the model step it names (`steps.<id>...`) or a fixed allowance for anything else (run input, tool output);
output tokens are the step's `max_tokens`, or `DEFAULT_MAX_OUTPUT_TOKENS` when it sets none. Cost follows the
model's catalog prices; a model the catalog does not price counts as free and is listed as unpriced, so a
budget check can tell.

An agent step is bounded per agent it can reach (its pinned definitions): `max_turns` model calls, each
answering with at most `DEFAULT_MAX_OUTPUT_TOKENS` and reading the instructions, the tools offered, the step's
input (an allowance) and every earlier turn's reply and tool answer (an allowance each); capped by the agent's
own budget when it has one. One entry per agent step, named by the model of the agent it starts with.

An fsm runs one state per visit: of the steps `<state>~<n>` of one visit `n` (within one namespace), only the
most expensive is listed and counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentflow_runtime import templates
from agentflow_runtime.model_catalog import ModelConfig
from agentflow_runtime.tokens import count_tokens

from .compiler import Plan
from .step_params import StepKind

__all__ = ["DEFAULT_MAX_OUTPUT_TOKENS", "TEMPLATE_ALLOWANCE_TOKENS", "CostEstimate", "StepCost", "estimate"]

DEFAULT_MAX_OUTPUT_TOKENS = 1024
TEMPLATE_ALLOWANCE_TOKENS = 256
_VISIT = re.compile(r"(?P<scope>(?:.*/)?)[a-z][a-z0-9_-]*~(?P<visit>[0-9]+)")


@dataclass(frozen=True)
class StepCost:
    step_id: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class CostEstimate:
    steps: tuple[StepCost, ...]
    unpriced_models: tuple[str, ...]

    @property
    def input_tokens(self) -> int:
        return sum(s.input_tokens for s in self.steps)

    @property
    def output_tokens(self) -> int:
        return sum(s.output_tokens for s in self.steps)

    @property
    def cost_usd(self) -> float:
        return sum(s.cost_usd for s in self.steps)


def estimate(plan: Plan, models: Mapping[str, ModelConfig]) -> CostEstimate:
    """The estimate of `plan` at the prices of `models` (by alias)."""
    outputs: dict[str, int] = {}
    steps: list[StepCost] = []
    unpriced: set[str] = set()
    for step in plan.steps:  # topological order: upstream estimates are known
        if step.kind is StepKind.AGENT:
            steps.append(_agent_step(step.id, step.params, models, unpriced))
            continue
        if step.kind is not StepKind.MODEL:
            continue
        alias = str(step.params.get("model") or "local").removeprefix("models/")
        contents = [m.get("content", "") for m in step.params.get("messages") or []]
        input_tokens = count_tokens([templates.literal_text(contents)])
        for expr in templates.expressions(contents):
            named = str(expr.parts[1]) if len(expr.parts) >= 2 and expr.root == "steps" else ""
            input_tokens += outputs.get(named, TEMPLATE_ALLOWANCE_TOKENS)
        output_tokens = int(step.params.get("max_tokens") or DEFAULT_MAX_OUTPUT_TOKENS)
        outputs[step.id] = output_tokens
        model = models.get(alias)
        if model is None:
            unpriced.add(alias)
        cost = 0.0 if model is None else model.cost_usd(_Tokens(input_tokens, output_tokens))
        steps.append(StepCost(step.id, alias, input_tokens, output_tokens, cost))
    return CostEstimate(_one_per_visit(steps), tuple(sorted(unpriced)))


def _one_per_visit(steps: list[StepCost]) -> tuple[StepCost, ...]:
    """Keeps, of the fsm steps of each visit, the most expensive one (exactly one of them runs)."""
    best: dict[tuple[str, str], int] = {}
    for i, cost in enumerate(steps):
        match = _VISIT.fullmatch(cost.step_id)
        if match is None:
            continue
        key = (match.group("scope"), match.group("visit"))
        held = best.get(key)
        if held is None or _rank(cost) > _rank(steps[held]):
            best[key] = i
    kept = set(best.values())
    return tuple(c for i, c in enumerate(steps) if _VISIT.fullmatch(c.step_id) is None or i in kept)


def _rank(cost: StepCost) -> tuple[float, int]:
    return cost.cost_usd, cost.input_tokens + cost.output_tokens


def _agent_step(
    step_id: str, params: Mapping[str, Any], models: Mapping[str, ModelConfig], unpriced: set[str]
) -> StepCost:
    agents: Mapping[str, Any] = params.get("agents") or {}
    input_tokens = output_tokens = 0
    cost = 0.0
    for agent in agents.values():
        alias = str(agent.get("model") or "local")
        fixed = count_tokens([str(agent.get("instructions") or ""), json.dumps(agent.get("tools") or [])])
        fixed += TEMPLATE_ALLOWANCE_TOKENS  # the step's input, or what a handoff passes on
        turns = int(agent.get("max_turns") or 1)
        per_turn = DEFAULT_MAX_OUTPUT_TOKENS + TEMPLATE_ALLOWANCE_TOKENS  # a reply and its tool answers
        agent_in = turns * fixed + per_turn * turns * (turns - 1) // 2
        agent_out = turns * DEFAULT_MAX_OUTPUT_TOKENS
        budget = agent.get("budget") or {}
        cap = int(budget.get("max_tokens") or 0)
        if cap and agent_in + agent_out > cap:
            agent_out = min(agent_out, cap)
            agent_in = cap - agent_out
        model = models.get(alias)
        if model is None:
            unpriced.add(alias)
        agent_cost = 0.0 if model is None else model.cost_usd(_Tokens(agent_in, agent_out))
        max_cost = float(budget.get("max_cost_usd") or 0.0)
        cost += min(agent_cost, max_cost) if max_cost else agent_cost
        input_tokens += agent_in
        output_tokens += agent_out
    entry = agents.get(str(params.get("agent")), {})
    return StepCost(step_id, str(entry.get("model") or "local"), input_tokens, output_tokens, cost)


@dataclass(frozen=True)
class _Tokens:
    input_tokens: int
    output_tokens: int
