"""Agent turns to and from ModelService messages."""

from __future__ import annotations

from typing import Any

from agentflow.models.v1 import models_pb2
from agentflow_runtime.protojson import dict_from_struct, struct_from_dict

from agentflow_worker.agent_calls import TurnReply, TurnRequest

__all__ = ["reply_from_proto", "request_to_proto"]

_ROLES = {
    "system": models_pb2.ROLE_SYSTEM,
    "user": models_pb2.ROLE_USER,
    "assistant": models_pb2.ROLE_ASSISTANT,
    "tool": models_pb2.ROLE_TOOL,
}


def _message(message: dict[str, Any]) -> models_pb2.Message:
    return models_pb2.Message(
        role=_ROLES[str(message.get("role", "user"))],
        content=str(message.get("content") or ""),
        tool_calls=[
            models_pb2.ToolCall(
                id=str(c["id"]), name=str(c["name"]), arguments=struct_from_dict(c.get("arguments") or {})
            )
            for c in message.get("tool_calls") or []
        ],
        tool_call_id=str(message.get("tool_call_id") or ""),
    )


def request_to_proto(request: TurnRequest, run: str, step_id: str, key: str) -> models_pb2.CompleteRequest:
    model = request.model if request.model.startswith("models/") else f"models/{request.model}"
    return models_pb2.CompleteRequest(
        model=model,
        messages=[_message(m) for m in request.messages],
        tools=[
            models_pb2.ToolDefinition(
                name=str(t["name"]),
                description=str(t.get("description") or ""),
                parameters=struct_from_dict(t.get("parameters") or {}),
            )
            for t in request.tools
        ],
        idempotency_key=key,
        run=run,
        step_id=step_id,
        agent=request.agent,
    )


def reply_from_proto(reply: models_pb2.CompleteResponse) -> TurnReply:
    return TurnReply(
        content=reply.message.content,
        tool_calls=[
            {"id": c.id, "name": c.name, "arguments": dict_from_struct(c.arguments)}
            for c in reply.message.tool_calls
        ],
        input_tokens=reply.usage.input_tokens,
        output_tokens=reply.usage.output_tokens,
        cost_usd=reply.cost_usd,
        model=reply.model,
        replayed=reply.replayed,
    )
