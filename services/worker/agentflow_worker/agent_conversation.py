"""Conversations of an agent step: what each agent is offered as tools, and what a handoff passes on.

An agent's pinned definition (see the planner's `agent_catalog`) lists its tools and handoffs. Handoffs are
offered to the model as tools: `transfer_to_<agent>` (the target takes the conversation over) and
`ask_<agent>` (the target answers a question; its final answer is the tool result), each taking an optional
`input` string. A handoff's input filter says what of the conversation the target sees: `full` (every message
but the previous instructions), `last_message` (the last user message) or `none`; the call's `input`, when
given, is appended as a user message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["Handoff", "handoff_of", "opening", "result_text", "tools_of"]

TRANSFER_PREFIX = "transfer_to_"
ASK_PREFIX = "ask_"
_HANDOFF_PARAMETERS = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "What to pass on (optional)."}},
}


@dataclass(frozen=True)
class Handoff:
    """A handoff an agent may make: to `agent`, by `mode` (transfer | delegate), with `input_filter`."""

    agent: str
    mode: str
    input_filter: str


def _handoff_tool(handoff: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    delegate = handoff.get("mode") == "delegate"
    name = (ASK_PREFIX if delegate else TRANSFER_PREFIX) + str(handoff["agent"])
    about = str(handoff.get("description") or target.get("description") or "")
    verb = "Ask agent {} and get its answer" if delegate else "Hand the conversation over to agent {}"
    return {
        "name": name,
        "description": (verb.format(handoff["agent"]) + (f": {about}" if about else ".")),
        "parameters": _HANDOFF_PARAMETERS,
    }


def tools_of(agent: dict[str, Any], agents: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """What the model of `agent` is offered: its tools, then its handoffs as tools."""
    tools = [
        {"name": t["name"], "description": t.get("description", ""), "parameters": t.get("parameters") or {}}
        for t in agent.get("tools") or []
    ]
    for handoff in agent.get("handoffs") or []:
        tools.append(_handoff_tool(handoff, agents.get(str(handoff["agent"]), {})))
    return tools


def handoff_of(agent: dict[str, Any], tool_name: str) -> Handoff | None:
    """The handoff a tool call of `agent` names, or None when it names no handoff of this agent."""
    for handoff in agent.get("handoffs") or []:
        delegate = handoff.get("mode") == "delegate"
        if tool_name == (ASK_PREFIX if delegate else TRANSFER_PREFIX) + str(handoff["agent"]):
            return Handoff(str(handoff["agent"]), str(handoff["mode"]), str(handoff["input_filter"]))
    return None


def opening(
    agent: dict[str, Any], history: list[dict[str, Any]], input_filter: str, text: str
) -> list[dict[str, Any]]:
    """The conversation `agent` starts from: its instructions, the filtered `history`, then `text`."""
    passed: list[dict[str, Any]] = []
    if input_filter == "full":
        passed = [m for m in history if m.get("role") != "system"]
    elif input_filter == "last_message":
        users = [m for m in history if m.get("role") == "user"]
        passed = users[-1:]
    if text:
        passed.append({"role": "user", "content": text})
    if not any(m.get("role") == "user" for m in passed):
        first = next((m for m in history if m.get("role") == "user"), None)
        passed.append(first or {"role": "user", "content": ""})
    return [{"role": "system", "content": str(agent.get("instructions") or "")}, *passed]


def result_text(output: Any) -> str:
    """A tool's output as the content of a TOOL message (JSON unless it is already text)."""
    return output if isinstance(output, str) else json.dumps(output, sort_keys=True)
