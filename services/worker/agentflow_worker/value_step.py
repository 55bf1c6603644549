"""Value steps: pure steps that call nothing (the routing and composite nodes of fsm and bt plans).

The params arrive rendered: `value` is the output; a false `require` fails the step (FAILED_PRECONDITION,
with `message`), which a selector or an fsm guard can observe through `steps.<id>.status`.
"""

from __future__ import annotations

from typing import Any

from agentflow_runtime.templates import truthy

from agentflow_worker.calls import StepFailed, StepResult
from agentflow_worker.model import error_json


def run_value_step(step_id: str, params: dict[str, Any]) -> StepResult:
    if "require" in params and not truthy(params["require"]):
        message = str(params.get("message") or "its requirement is false")
        raise StepFailed(error_json("FAILED_PRECONDITION", f"step {step_id}: {message}", "REQUIREMENT_FALSE"))
    return StepResult(output=params.get("value"))
