"""The agent catalog and agent steps: validation as field violations, definitions pinned into the plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agentflow_planner.agent_catalog import AgentCatalog
from agentflow_planner.estimate import DEFAULT_MAX_OUTPUT_TOKENS, TEMPLATE_ALLOWANCE_TOKENS, estimate
from agentflow_planner.registry import validate
from agentflow_runtime.model_catalog import ModelConfig, load_models

REPO = Path(__file__).resolve().parents[3]
MODELS = {"local": ModelConfig("local", "local", "local")}
TOOLS = {"search": {"description": "searches", "parameters": {"type": "object"}}, "mail": {}}


def agent(name: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    return name, {"name": name, "model": "local", "instructions": f"You are {name}.", **fields}


def catalog(*docs: tuple[str, Any]) -> AgentCatalog:
    return AgentCatalog.build(list(docs), MODELS, TOOLS)


def workflow(agent_name: str = "triage") -> dict[str, Any]:
    return {
        "id": "helpdesk",
        "steps": [
            {"id": "prep", "kind": "model", "prompt": "hi"},
            {"id": "answer", "kind": "agent", "agent": agent_name, "input": "{{ input.question }}"},
        ],
    }


def test_the_repo_catalog_agents_are_valid_and_the_example_workflow_pins_them() -> None:
    models = {m.alias: m for m in load_models(REPO / "catalog" / "models")}
    agents = AgentCatalog.load(REPO / "catalog", models)
    assert set(agents.agents) >= {"editor", "reviewer", "publisher"}
    assert {name: problems for name, problems in agents.problems.items() if problems} == {}

    checked = validate((REPO / "catalog" / "workflows" / "agent-demo.yaml").read_text(), agents)

    assert checked.violations == ()
    assert checked.plan is not None
    (step,) = checked.plan.steps
    assert step.kind.value == "agent"
    assert set(step.params["agents"]) == {"editor", "reviewer", "publisher"}
    editor = step.params["agents"]["editor"]
    assert [t["name"] for t in editor["tools"]] == ["word-count", "ticker"]
    assert editor["tools"][0]["parameters"]["required"] == ["text"]  # the catalog tool's schema, pinned
    assert editor["handoffs"][0] == {
        "agent": "reviewer",
        "mode": "delegate",
        "input_filter": "none",
        "description": "Decides whether a draft can be published.",
    }


def test_every_problem_of_an_agent_is_a_violation_of_the_step_that_uses_it() -> None:
    agents = catalog(
        agent(
            "triage",
            model="gpt-9",
            tools=["search", "nuke"],
            handoffs=[
                {"agent": "billing", "mode": "teleport"},
                {"agent": "ghost"},
                {"agent": "billing", "input_filter": "some"},
            ],
            max_turns=0,
            budget={"max_tokens": -1},
            colour="red",
        ),
        agent("billing"),
    )

    checked = validate(workflow(), agents)

    assert checked.plan is None
    found = {v.description for v in checked.violations}
    assert {v.field for v in checked.violations} == {"steps[1].agent"}
    expected = [
        "agent 'triage': colour: unknown field",
        "agent 'triage': model: unknown model 'gpt-9'",
        "agent 'triage': tools[1]: unknown tool 'nuke'",
        "agent 'triage': handoffs[0].mode: must be one of transfer, delegate",
        "agent 'triage': handoffs[1].agent: unknown agent 'ghost'",
        "agent 'triage': handoffs[2].agent: 'billing' is listed twice",
        "agent 'triage': handoffs[2].input_filter: must be one of full, last_message, none",
        "agent 'triage': max_turns: must be an integer from 1 to 100",
        "agent 'triage': budget.max_tokens: must be a non-negative integer",
    ]
    for text in expected:
        assert any(d.startswith(text) for d in found), (text, found)


def test_unknown_agents_and_delegation_cycles_are_refused_but_transfer_cycles_are_fine() -> None:
    unknown = validate(workflow("nobody"), catalog(agent("triage")))
    assert [(v.field, v.description.split(" (")[0]) for v in unknown.violations] == [
        ("steps[1].agent", "unknown agent 'nobody'")
    ]

    looping = catalog(
        agent("triage", handoffs=[{"agent": "billing", "mode": "delegate"}]),
        agent("billing", handoffs=[{"agent": "triage", "mode": "delegate"}]),
    )
    cycle = validate(workflow(), looping)
    assert any("delegation cycle: " in v.description for v in cycle.violations)

    transfers = catalog(
        agent("triage", handoffs=[{"agent": "billing"}]),
        agent("billing", handoffs=[{"agent": "triage"}]),
    )
    fine = validate(workflow(), transfers)
    assert fine.violations == ()
    assert fine.plan is not None
    pinned = fine.plan.steps[1].params["agents"]
    assert pinned["triage"]["handoffs"] == [
        {"agent": "billing", "mode": "transfer", "input_filter": "full", "description": ""}
    ]


def test_the_plan_hash_covers_the_pinned_agents() -> None:
    before = validate(workflow(), catalog(agent("triage")))
    after = validate(workflow(), catalog(agent("triage", instructions="Be brief.")))
    assert before.plan is not None and after.plan is not None
    assert before.plan.plan_hash != after.plan.plan_hash


def test_agent_step_fields_are_checked() -> None:
    bad = workflow()
    bad["steps"][1] = {"id": "answer", "kind": "agent", "agent": "Bad Name", "prompt": "x"}
    checked = validate(bad, catalog(agent("triage")))
    fields = {v.field for v in checked.violations}
    assert {"steps[1].agent", "steps[1].input", "steps[1].prompt"} <= fields


def test_agent_definitions_are_literal() -> None:
    checked = validate(workflow(), catalog(agent("triage", instructions="Hi {{ input.x }}")))
    assert any("must be literal text" in v.description for v in checked.violations)
    tools = {"search": {"description": "finds {{ things }}", "parameters": {"type": "object"}}}
    agents = AgentCatalog.build([agent("triage", tools=["search"])], MODELS, tools)
    checked = validate(workflow(), agents)
    assert [v.description for v in checked.violations] == [
        "agent triage.tools[0].description: contains '{{' (agent definitions are literal, not templates)"
    ]


def test_an_agent_step_is_priced_per_reachable_agent_within_its_caps() -> None:
    local = ModelConfig("local", "local", "local", input_price_per_mtok=1.0, output_price_per_mtok=2.0)
    priced = {"local": local}
    agents = AgentCatalog.build(
        [
            agent("triage", max_turns=2, handoffs=[{"agent": "billing", "mode": "delegate"}]),
            agent("billing", max_turns=3, budget={"max_tokens": 1000, "max_cost_usd": 0.0001}),
        ],
        priced,
        TOOLS,
    )
    checked = validate(workflow(), agents)
    assert checked.plan is not None

    cost = estimate(checked.plan, priced)

    (agent_step,) = [s for s in cost.steps if s.step_id == "answer"]
    assert agent_step.model == "local"
    # triage: 2 turns of at most DEFAULT_MAX_OUTPUT_TOKENS out; billing: capped at its 1000 tokens (all
    # counted as output) and its $0.0001.
    assert agent_step.output_tokens == 2 * DEFAULT_MAX_OUTPUT_TOKENS + 1000
    assert agent_step.input_tokens > 2 * TEMPLATE_ALLOWANCE_TOKENS
    triage_cost = priced["local"].cost_usd(_Usage(agent_step.input_tokens, 2 * DEFAULT_MAX_OUTPUT_TOKENS))
    assert agent_step.cost_usd == pytest.approx(triage_cost + 0.0001)
    assert cost.unpriced_models == ()


class _Usage:
    def __init__(self, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
