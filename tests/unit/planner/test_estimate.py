"""Cost preflight: upper bounds from prompts, max_tokens and catalog prices."""

from __future__ import annotations

import pytest
from agentflow_planner.compiler import compile_plan
from agentflow_planner.definition import check_definition
from agentflow_planner.estimate import DEFAULT_MAX_OUTPUT_TOKENS, TEMPLATE_ALLOWANCE_TOKENS, estimate
from agentflow_runtime.model_catalog import ModelConfig
from agentflow_runtime.tokens import count_tokens

PRICED = ModelConfig(
    alias="priced", provider="local", provider_model="p", input_price_per_mtok=2.0, output_price_per_mtok=10.0
)


def plan_of(definition: dict[str, object]):  # type: ignore[no-untyped-def]
    checked, violations = check_definition(definition)
    assert checked is not None, violations
    return compile_plan(checked)


def test_upstream_outputs_and_allowances_bound_the_input() -> None:
    plan = plan_of(
        {
            "id": "two-models",
            "steps": [
                {
                    "id": "draft",
                    "kind": "model",
                    "model": "priced",
                    "max_tokens": 200,
                    "prompt": "Write about {{ input.topic }} please",
                },
                {
                    "id": "count",
                    "kind": "tool",
                    "tool": "word-count",
                    "needs": ["draft"],
                    "arguments": {"text": "{{ steps.draft.output.text }}"},
                },
                {
                    "id": "critique",
                    "kind": "model",
                    "model": "priced",
                    "needs": ["draft"],
                    "prompt": "Critique: {{ steps.draft.output.text }}",
                },
            ],
        }
    )
    cost = estimate(plan, {"priced": PRICED})
    assert [s.step_id for s in cost.steps] == ["draft", "critique"]  # the tool step spends no tokens
    draft, critique = cost.steps
    assert draft.input_tokens == count_tokens(["Write about ", " please"]) + TEMPLATE_ALLOWANCE_TOKENS
    assert draft.output_tokens == 200
    assert critique.input_tokens == count_tokens(["Critique: "]) + 200  # draft's output, at most
    assert critique.output_tokens == DEFAULT_MAX_OUTPUT_TOKENS
    assert cost.input_tokens == draft.input_tokens + critique.input_tokens
    assert cost.cost_usd == pytest.approx((cost.input_tokens * 2.0 + cost.output_tokens * 10.0) / 1e6)
    assert cost.unpriced_models == ()


def test_a_model_without_a_price_is_listed() -> None:
    plan = plan_of({"id": "x", "steps": [{"id": "a", "kind": "model", "model": "mystery", "prompt": "hi"}]})
    cost = estimate(plan, {"priced": PRICED})
    assert cost.unpriced_models == ("mystery",)
    assert cost.cost_usd == 0
    assert cost.output_tokens == DEFAULT_MAX_OUTPUT_TOKENS


def test_an_fsm_counts_one_state_per_visit() -> None:
    plan = plan_of(
        {
            "id": "fsm-cost",
            "kind": "fsm",
            "initial": "start",
            "terminal": ["cheap", "dear"],
            "max_transitions": 1,
            "states": {
                "start": {
                    "kind": "model",
                    "model": "priced",
                    "prompt": "go",
                    "max_tokens": 10,
                    "transitions": [{"to": "cheap", "when": "{{ input.x }}"}, {"to": "dear"}],
                },
                "cheap": {"kind": "model", "model": "priced", "prompt": "a", "max_tokens": 5},
                "dear": {"kind": "model", "model": "priced", "prompt": "b", "max_tokens": 500},
            },
        }
    )
    cost = estimate(plan, {"priced": PRICED})
    assert [s.step_id for s in cost.steps] == ["start~0", "dear~1"]
    assert cost.output_tokens == 510
