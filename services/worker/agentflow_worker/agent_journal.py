"""The journal of an agent step's attempt: its AGENT_TURN and AGENT_HANDOFF events, by key.

Every model reply, tool result and handoff of the loop is written as a run event (through the engine, under
the lease) before the loop uses it, and carries a `key` naming its place in the loop (`t2`: the second model
turn; `t2c1`: its first tool call; `t2c1/t1`: the first turn of the agent that call delegated to). On resume
the events of the step's current attempt are read back and the loop runs again from the start: what the
journal holds is taken from it, so no completed model or tool call is made twice; the first missing key is
where the loop really continues.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from agentflow_worker.model import Event, EventType

__all__ = ["AgentJournal", "Record"]

Record = Callable[[EventType, dict[str, Any]], Awaitable[None]]
"""Writes one event of the step (its data already holds key and attempt)."""


class AgentJournal:
    """What the current attempt has journaled, and the writer of what comes next."""

    def __init__(self, attempt: int, events: Iterable[Event], record: Record) -> None:
        self.attempt = attempt
        self._record = record
        self._entries: dict[str, dict[str, Any]] = {}
        for event in events:
            data = event.data or {}
            journaled = event.type in (EventType.AGENT_TURN, EventType.AGENT_HANDOFF)
            if journaled and data.get("attempt") == attempt:
                self._entries.setdefault(str(data.get("key")), data)

    @property
    def resumed(self) -> bool:
        return bool(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._entries.get(key)

    def turns_under(self, prefix: str) -> list[dict[str, Any]]:
        """The journaled model turns whose key starts with `prefix` (a delegated conversation's)."""
        return [e for k, e in self._entries.items() if k.startswith(prefix) and "reply" in e]

    def unanswered_calls(self) -> list[tuple[str, tuple[str, str]]]:
        """Tool calls a journaled reply asked for that have no journaled answer: `(key, (agent, tool))`."""
        found = []
        for key, entry in self._entries.items():
            reply = entry.get("reply")
            if not isinstance(reply, dict):
                continue
            for i, call in enumerate(reply.get("tool_calls") or [], start=1):
                if f"{key}c{i}" not in self._entries:
                    found.append((f"{key}c{i}", (str(entry.get("agent")), str(call.get("name")))))
        return found

    async def write(self, kind: EventType, key: str, data: dict[str, Any]) -> dict[str, Any]:
        """Journal `data` under `key` (once: an entry already journaled is kept as it was)."""
        if key in self._entries:
            return self._entries[key]
        entry = {"key": key, "attempt": self.attempt, **data}
        await self._record(kind, entry)
        self._entries[key] = entry
        return entry
