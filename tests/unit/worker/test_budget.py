"""Budget preflight: refused with the numbers before anything runs; spend derived from the journal."""

from __future__ import annotations

import pytest
from agentflow_runtime.errors import FailedPrecondition, InvalidArgument
from agentflow_worker.budget import Budget, preflight, spent_usd
from agentflow_worker.model import StepRecord, StepState

ESTIMATE = {"input_tokens": 300, "output_tokens": 1024, "cost_usd": 0.0108, "unpriced_models": []}


def test_no_budget_or_no_cap_never_refuses() -> None:
    preflight(None, ESTIMATE)
    preflight(Budget(), ESTIMATE)


def test_money_cap_below_the_estimate_is_refused_with_numbers() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        preflight(Budget(max_cost_usd=0.01), ESTIMATE)
    assert caught.value.reason == "BUDGET_EXCEEDED"
    assert caught.value.metadata["estimated_cost_usd"] == "0.010800"
    assert caught.value.metadata["max_cost_usd"] == "0.010000"
    assert "$0.010800" in caught.value.message


def test_token_cap_below_the_estimate_is_refused() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        preflight(Budget(max_tokens=1000), ESTIMATE)
    assert caught.value.metadata["estimated_tokens"] == "1324"
    preflight(Budget(max_tokens=1324, max_cost_usd=0.02), ESTIMATE)  # exactly at the cap fits


def test_a_money_cap_cannot_be_checked_against_an_unpriced_model() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        preflight(Budget(max_cost_usd=100.0), {**ESTIMATE, "unpriced_models": ["mystery"]})
    assert caught.value.reason == "BUDGET_UNPRICED"
    preflight(Budget(max_tokens=10_000), {**ESTIMATE, "unpriced_models": ["mystery"]})  # tokens still can


def test_negative_caps_are_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        Budget(max_cost_usd=-1)
    assert caught.value.violations == [("budget.max_cost_usd", "must not be negative")]


def test_spend_is_the_sum_of_model_step_costs_in_the_journal() -> None:
    steps = [
        StepRecord("a", "model", StepState.SUCCEEDED, output={"text": "x", "cost_usd": 0.25}),
        StepRecord("b", "tool", StepState.SUCCEEDED, output={"cost_usd": 99}),  # not a model step
        StepRecord("c", "model", StepState.SUCCEEDED, output={"text": "y", "cost_usd": 0.5}),
        StepRecord("d", "model", StepState.PENDING),
    ]
    assert spent_usd(steps) == 0.75
    assert Budget.from_json(Budget(1.5, 10).to_json()) == Budget(1.5, 10)
    assert Budget.from_json(None) is None
