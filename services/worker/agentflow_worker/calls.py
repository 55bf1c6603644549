"""What a step does, as seen by the engine: a model, tool or memory call that returns the step's output."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentflow_worker.model import EventType, RunRecord

Emit = Callable[[EventType, str, dict[str, Any]], Awaitable[None]]
"""Records a non-transition event (tool output chunk, model delta) for a step."""


class StepFailed(Exception):
    """The step ran and failed; `error` is shaped like google.rpc.Status."""

    def __init__(self, error: dict[str, Any], retryable: bool = False) -> None:
        super().__init__(error.get("message", "step failed"))
        self.error = error
        self.retryable = retryable


@dataclass
class StepResult:
    """A step's journaled output and the model tokens it used."""

    output: Any
    input_tokens: int = 0
    output_tokens: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


class StepCalls(Protocol):
    """The side of each step kind; implemented over gRPC in `mesh_calls`."""

    async def model(self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit) -> StepResult: ...

    async def tool(self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit) -> StepResult: ...

    async def memory(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit
    ) -> StepResult: ...


def idempotency_key(run: RunRecord, step_id: str) -> str:
    """Derived from run and step, never from the attempt: a retry after a crash is recognised."""
    return f"{run.run_id}/{step_id}"
