"""What every model provider implements, in domain types (no protobuf, no HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "ROLES",
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "Delta",
    "Embeddings",
    "Provider",
    "ToolCall",
    "ToolSpec",
    "Usage",
]

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ToolCall:
    """A model's request to call tool `name` with `arguments`; `id` is unique in the conversation."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: its name, description and JSON-schema parameters."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChatMessage:
    """One turn: `role` is system, user, assistant or tool.

    An assistant message may carry `tool_calls`; a tool message answers one of them (`tool_call_id`).
    """

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


@dataclass(frozen=True)
class CompletionRequest:
    """A conversation to complete with the provider's own model id."""

    model: str
    messages: Sequence[ChatMessage]
    max_tokens: int | None = None
    temperature: float | None = None
    tools: Sequence[ToolSpec] = ()
    agent: str = ""


@dataclass(frozen=True)
class Usage:
    """Tokens one call consumed."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Completion:
    """A whole answer; `finish_reason` is `stop`, `length` or `tool_calls` (then `tool_calls` is set)."""

    text: str
    finish_reason: str
    usage: Usage
    model: str
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer; the last one has `finish_reason` and `usage` (and may be empty)."""

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class Embeddings:
    """One vector per input text, in order, and the tokens used."""

    vectors: list[list[float]]
    usage: Usage = field(default_factory=Usage)


class Provider(Protocol):
    """A source of completions and embeddings."""

    async def complete(self, request: CompletionRequest) -> Completion: ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[Delta]: ...

    async def embed(self, model: str, texts: Sequence[str]) -> Embeddings: ...

    async def aclose(self) -> None: ...
