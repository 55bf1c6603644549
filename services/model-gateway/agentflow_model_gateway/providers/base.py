"""What every model provider implements, in domain types (no protobuf, no HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "ROLES",
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "Delta",
    "Embeddings",
    "Provider",
    "Usage",
]

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatMessage:
    """One turn: `role` is system, user or assistant."""

    role: str
    content: str


@dataclass(frozen=True)
class CompletionRequest:
    """A conversation to complete with the provider's own model id."""

    model: str
    messages: Sequence[ChatMessage]
    max_tokens: int | None = None
    temperature: float | None = None


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
    """A whole answer; `finish_reason` is `stop` or `length`."""

    text: str
    finish_reason: str
    usage: Usage
    model: str


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
