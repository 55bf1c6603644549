"""What an agent step calls: a model turn with tools offered, and a tool execution under a given key.

Messages are plain dicts, as journaled: `{role, content, tool_calls?: [{id, name, arguments}],
tool_call_id?}`; tools are `{name, description, parameters}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agentflow_worker.calls import Emit, StepResult
from agentflow_worker.model import RunRecord

__all__ = ["AgentCalls", "TurnReply", "TurnRequest"]


@dataclass(frozen=True)
class TurnRequest:
    """One model call of an agent loop."""

    model: str
    agent: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    timeout: float


@dataclass
class TurnReply:
    """The model's answer: text and/or tool calls, with what it cost."""

    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    model: str = ""
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "tool_calls": self.tool_calls,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
            "cost_usd": self.cost_usd,
            "model": self.model,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TurnReply:
        usage = data.get("usage") or {}
        return cls(
            content=str(data.get("content") or ""),
            tool_calls=list(data.get("tool_calls") or []),
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            cost_usd=float(data.get("cost_usd") or 0.0),
            model=str(data.get("model") or ""),
            replayed=True,
        )


@runtime_checkable
class AgentCalls(Protocol):
    """Implemented over gRPC by `mesh_calls.MeshStepCalls` (tool calls take the tool steps' path)."""

    async def complete_turn(self, run: RunRecord, step_id: str, request: TurnRequest, key: str) -> TurnReply:
        """One model call with the idempotency key `key`."""
        ...

    async def execute_tool(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, *, key: str
    ) -> StepResult:
        """Executes `params["tool"]` with `params["arguments"]` under the idempotency key `key`; StepFailed
        when it fails (as a tool step would)."""
        ...

    async def cancel_tool(self, run: RunRecord, tool: str, key: str) -> None:
        """Stops the execution of `tool` under `key` at the tool-sandbox, if it still runs."""
        ...
