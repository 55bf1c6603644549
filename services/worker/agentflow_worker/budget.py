"""Budgets: a run whose plan's estimate exceeds its cap is refused before anything runs.

The estimate is the planner's upper bound (`Plan.cost_estimate`). A money cap cannot be checked against a
model the catalog has no price for, so such a plan is refused under a money cap too (reason BUDGET_UNPRICED).
What a run has spent is derived from its journal: the `cost_usd` each model step recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agentflow_runtime.errors import FailedPrecondition, InvalidArgument

from agentflow_worker.model import StepRecord

SPENDING_KINDS = frozenset({"model", "agent"})
"""Step kinds whose output records the `cost_usd` of their model calls."""


@dataclass(frozen=True)
class Budget:
    """A cap on a run's model spend; 0 means no cap on that measure."""

    max_cost_usd: float = 0.0
    max_tokens: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.max_cost_usd < 0:
            problems.append(("budget.max_cost_usd", "must not be negative"))
        if self.max_tokens < 0:
            problems.append(("budget.max_tokens", "must not be negative"))
        if problems:
            raise InvalidArgument("invalid budget", reason="INVALID_BUDGET", violations=problems)

    @property
    def capped(self) -> bool:
        return self.max_cost_usd > 0 or self.max_tokens > 0

    def to_json(self) -> dict[str, Any]:
        return {"max_cost_usd": self.max_cost_usd, "max_tokens": self.max_tokens}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Budget | None:
        return None if not data else cls(float(data["max_cost_usd"]), int(data["max_tokens"]))


def preflight(budget: Budget | None, estimate: dict[str, Any] | None) -> None:
    """Refuse (FAILED_PRECONDITION, with the numbers) a plan whose estimate does not fit the budget."""
    if budget is None or not budget.capped:
        return
    estimate = estimate or {}
    cost = float(estimate.get("cost_usd", 0.0))
    tokens = int(estimate.get("input_tokens", 0)) + int(estimate.get("output_tokens", 0))
    numbers = {
        "estimated_cost_usd": f"{cost:.6f}",
        "max_cost_usd": f"{budget.max_cost_usd:.6f}",
        "estimated_tokens": str(tokens),
        "max_tokens": str(budget.max_tokens),
    }
    unpriced = list(estimate.get("unpriced_models", []))
    if budget.max_cost_usd > 0 and unpriced:
        raise FailedPrecondition(
            f"models without a price ({', '.join(unpriced)}): a money budget cannot be checked",
            reason="BUDGET_UNPRICED",
            metadata={**numbers, "unpriced_models": ",".join(unpriced)},
        )
    if budget.max_cost_usd > 0 and cost > budget.max_cost_usd:
        raise FailedPrecondition(
            f"estimated cost ${cost:.6f} exceeds the budget ${budget.max_cost_usd:.6f}",
            reason="BUDGET_EXCEEDED",
            metadata=numbers,
        )
    if budget.max_tokens > 0 and tokens > budget.max_tokens:
        raise FailedPrecondition(
            f"estimated {tokens} tokens exceed the budget of {budget.max_tokens}",
            reason="BUDGET_EXCEEDED",
            metadata=numbers,
        )


def spent_usd(steps: Iterable[StepRecord]) -> float:
    """What a run's model and agent steps have cost so far, from their journaled outputs."""
    return sum(
        float(s.output.get("cost_usd") or 0.0)
        for s in steps
        if s.kind in SPENDING_KINDS and isinstance(s.output, dict)
    )
