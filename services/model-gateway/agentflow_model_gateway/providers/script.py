"""Scripts for the local model: deterministic replies, tool calls and handoffs chosen by rules.

A catalog model with `provider: local` may carry `script:`, a list of rules tried in order; the first whose
`when` holds answers, and without a match the local model drafts its usual text. Every condition is
optional (none: always matches) and all given must hold::

    script:
      - when:
          agent: triage            # the request's agent (CompleteRequest.agent)
          turn: 1                  # 1 + the assistant messages in the conversation
          last_role: user          # role of the last message: system | user | assistant | tool
          last_tool: word-count    # the last message is the result of a call to this tool
          user_contains: refund    # the last user message contains this (any case)
          result_contains: '"ok"'  # the last tool result contains this
          has_tool: transfer_to_billing   # the request offers this tool
        reply:
          text: "Counted ${last_result.words} words."      # optional with tool_calls
          tool_calls:
            - name: word-count
              arguments: {text: "${last_user}"}

`${name}` and `${name.path}` in texts and string arguments are replaced with facts of the conversation:
`agent`, `turn`, `last_user`, `first_user`, `last_result` (the last tool result; a dotted path reads into
it as JSON). An argument that is exactly one `${...}` keeps the JSON type of its value. Tool call ids are
`call_<turn>_<n>`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import ChatMessage, CompletionRequest, ToolCall

__all__ = ["Rule", "Script", "ScriptError", "parse_script"]

CONDITIONS = frozenset(
    {"agent", "turn", "last_role", "last_tool", "user_contains", "result_contains", "has_tool"}
)
_PLACEHOLDER = re.compile(r"\$\{([a-z_]+)((?:\.[A-Za-z0-9_-]+)*)\}")
_FACTS = frozenset({"agent", "turn", "last_user", "first_user", "last_result"})


class ScriptError(ValueError):
    """A script that cannot be used."""


@dataclass(frozen=True)
class Rule:
    """One rule: conditions and the reply they select."""

    when: Mapping[str, Any]
    text: str = ""
    tool_calls: tuple[tuple[str, Mapping[str, Any]], ...] = ()


@dataclass(frozen=True)
class _Facts:
    agent: str
    turn: int
    last_role: str
    last_tool: str
    last_user: str
    first_user: str
    last_result: str
    tools: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, request: CompletionRequest) -> _Facts:
        messages = list(request.messages)
        users = [m.content for m in messages if m.role == "user"]
        last = messages[-1] if messages else ChatMessage("user", "")
        results = [m for m in messages if m.role == "tool"]
        return cls(
            agent=request.agent,
            turn=1 + sum(1 for m in messages if m.role == "assistant"),
            last_role=last.role,
            last_tool=_tool_of(messages, last.tool_call_id) if last.role == "tool" else "",
            last_user=users[-1] if users else "",
            first_user=users[0] if users else "",
            last_result=results[-1].content if results else "",
            tools=frozenset(t.name for t in request.tools),
        )

    def holds(self, when: Mapping[str, Any]) -> bool:
        return all(self._holds(key, value) for key, value in when.items())

    def _holds(self, key: str, value: Any) -> bool:
        if key in ("user_contains", "result_contains"):
            haystack = self.last_user.lower() if key == "user_contains" else self.last_result
            needle = str(value).lower() if key == "user_contains" else str(value)
            return needle in haystack
        if key == "has_tool":
            return value in self.tools
        return bool(getattr(self, key) == value)

    def value(self, name: str, path: str) -> Any:
        value: Any = getattr(self, name)
        if not path:
            return value
        try:
            value = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            return ""
        for part in path.strip(".").split("."):
            if isinstance(value, dict):
                value = value.get(part, "")
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return ""
        return value


def _tool_of(messages: Sequence[ChatMessage], call_id: str) -> str:
    for message in reversed(messages):
        for call in message.tool_calls:
            if call.id == call_id:
                return call.name
    return ""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _fill(value: Any, facts: _Facts) -> Any:
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return facts.value(whole.group(1), whole.group(2))
        return _PLACEHOLDER.sub(lambda m: _text(facts.value(m.group(1), m.group(2))), value)
    if isinstance(value, Mapping):
        return {str(k): _fill(v, facts) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, facts) for v in value]
    return value


@dataclass(frozen=True)
class Script:
    """Rules tried in order."""

    rules: tuple[Rule, ...]

    def reply(self, request: CompletionRequest) -> tuple[str, tuple[ToolCall, ...]] | None:
        """The first matching rule's text and tool calls, or None when no rule matches."""
        facts = _Facts.of(request)
        for rule in self.rules:
            if facts.holds(rule.when):
                text = _text(_fill(rule.text, facts))
                calls = tuple(
                    ToolCall(f"call_{facts.turn}_{i}", name, dict(_fill(dict(args), facts)))
                    for i, (name, args) in enumerate(rule.tool_calls, start=1)
                )
                return text, calls
        return None


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, Mapping) or set(raw) - {"when", "reply"} or "reply" not in raw:
        raise ScriptError(f"{where}: a rule is an object with `reply` and an optional `when`")
    when = raw.get("when") or {}
    if not isinstance(when, Mapping) or set(when) - CONDITIONS:
        raise ScriptError(f"{where}.when: conditions are {', '.join(sorted(CONDITIONS))}")
    if "turn" in when and (isinstance(when["turn"], bool) or not isinstance(when["turn"], int)):
        raise ScriptError(f"{where}.when.turn: must be an integer")
    reply = raw["reply"]
    if not isinstance(reply, Mapping) or set(reply) - {"text", "tool_calls"} or not reply:
        raise ScriptError(f"{where}.reply: give `text`, `tool_calls` or both")
    if not isinstance(reply.get("text", ""), str):
        raise ScriptError(f"{where}.reply.text: must be a string")
    calls = reply.get("tool_calls") or []
    if not isinstance(calls, list):
        raise ScriptError(f"{where}.reply.tool_calls: must be a list of {{name, arguments}}")
    parsed: list[tuple[str, Mapping[str, Any]]] = []
    for i, call in enumerate(calls):
        ok = isinstance(call, Mapping) and not set(call) - {"name", "arguments"}
        if not ok or not isinstance(call.get("name"), str) or not call["name"]:
            raise ScriptError(f"{where}.reply.tool_calls[{i}]: needs a `name` (and optional `arguments`)")
        args = call.get("arguments") or {}
        if not isinstance(args, Mapping):
            raise ScriptError(f"{where}.reply.tool_calls[{i}].arguments: must be an object")
        parsed.append((call["name"], dict(args)))
    _check_placeholders(reply, f"{where}.reply")
    return Rule(dict(when), reply.get("text", ""), tuple(parsed))


def _check_placeholders(value: Any, where: str) -> None:
    if isinstance(value, str):
        for match in _PLACEHOLDER.finditer(value):
            if match.group(1) not in _FACTS:
                known = ", ".join(sorted(_FACTS))
                raise ScriptError(f"{where}: unknown ${{{match.group(1)}}} (known: {known})")
    elif isinstance(value, Mapping):
        for item in value.values():
            _check_placeholders(item, where)
    elif isinstance(value, list):
        for item in value:
            _check_placeholders(item, where)


def parse_script(raw: Sequence[Any], where: str = "script") -> Script:
    """The script of a catalog entry; ScriptError names the first problem."""
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ScriptError(f"{where}: must be a list of rules")
    return Script(tuple(_rule(rule, f"{where}[{i}]") for i, rule in enumerate(raw)))
