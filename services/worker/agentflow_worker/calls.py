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
    """The side of each step kind; implemented over gRPC in `mesh_calls`.

    `attempt` is the journaled attempt number of the step (see `idempotency_key`).
    """

    async def model(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, *, attempt: int = 1
    ) -> StepResult: ...

    async def tool(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, *, attempt: int = 1
    ) -> StepResult: ...

    async def memory(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, *, attempt: int = 1
    ) -> StepResult: ...

    async def stop(
        self, run: RunRecord, step_id: str, kind: str, params: dict[str, Any], attempt: int
    ) -> None:
        """Stop the side effect of a call that may still be running at the callee (a run cancelled, an
        attempt timed out). Cancelling the local call is not enough: keyed tool executions outlive their
        caller on purpose. Best effort; a no-op for kinds whose calls end with their caller."""


def idempotency_key(run: RunRecord, step_id: str, attempt: int) -> str:
    """`{run}/{step}/{attempt}`, derived from the run, the step and the journaled attempt number, never
    from the process that makes the call.

    The engine journals STEP_STARTED with the attempt number before calling. A worker that resumes a step
    it finds RUNNING in the journal (its previous owner crashed mid-call) reuses that number, so the
    callee sees the same key and answers from its record, or attaches to the execution still in flight:
    the side effect happens once. Only a deliberate retry after a failed attempt increments the number: a
    new key, so the callee executes again instead of replaying the recorded failure.
    """
    return f"{run.run_id}/{step_id}/{attempt}"
