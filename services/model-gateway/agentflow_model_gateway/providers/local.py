"""The local provider: deterministic, offline, instant. The same conversation always gets the same answer.

It writes a short extractive draft from the last user message: the topic (the phrase after "about"/"on",
else the leading key words) and the message's key words in order of appearance. Tokens are counted with
`tokens.tokenize`; streams go word by word; embeddings are `agentflow_runtime.embedding.hash_embedding`.

With a script (`script.Script`, from the catalog entry's `script:`) the first matching rule answers instead:
a text, tool calls, or both; a conversation no rule matches gets the draft.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence

from agentflow_runtime.embedding import DEFAULT_DIM, hash_embedding
from agentflow_runtime.tokens import count_tokens, split_words, tokenize

from .base import ChatMessage, Completion, CompletionRequest, Delta, Embeddings, ToolCall, Usage
from .script import Script

__all__ = ["LocalProvider", "compose"]

_TOPIC = re.compile(r"\b(?:about|on|regarding)\s+(.+?)(?:[:.;?!\n]|$)", re.IGNORECASE)
_STOPWORD_TEXT = (
    "a an the and or but if then of to in on at by for with about from into over under is are was were be "
    "been being it its this that these those what which who whom why how when where i you he she we they me "
    "him her us them my your our their do does did done can could should would will shall may might must "
    "please write short note brief give tell explain describe make summarise summarize matters"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_MAX_KEYWORDS = 8


def _prompt(messages: Sequence[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return messages[-1].content if messages else ""


def _keywords(text: str) -> list[str]:
    seen: list[str] = []
    for word in tokenize(text):
        lower = word.lower()
        if word.isalnum() and lower not in _STOPWORDS and lower not in seen and not lower.isdigit():
            seen.append(lower)
    return seen[:_MAX_KEYWORDS]


def compose(messages: Sequence[ChatMessage]) -> str:
    """The local model's answer to a conversation."""
    prompt = _prompt(messages).strip()
    keywords = _keywords(prompt)
    match = _TOPIC.search(prompt)
    topic = match.group(1).strip() if match else " ".join(keywords[:3])
    if not topic:
        return "Nothing to draft: the conversation has no words."
    points = ", ".join(keywords) if keywords else topic
    return (
        f"Draft about {topic}: {topic} is the subject of this note. "
        f"Key points: {points}. "
        f"Written by the deterministic local model from a {len(tokenize(prompt))}-token prompt."
    )


class LocalProvider:
    """See the module docstring."""

    def __init__(self, dim: int = DEFAULT_DIM, script: Script | None = None) -> None:
        self._dim = dim
        self._script = script

    def _answer(self, request: CompletionRequest) -> Completion:
        scripted = self._script.reply(request) if self._script is not None else None
        if scripted is not None:
            return _scripted(request, *scripted)
        words = split_words(compose(request.messages))
        finish = "stop"
        if request.max_tokens:
            budget, kept = request.max_tokens, []
            for word in words:
                budget -= len(tokenize(word))
                if budget < 0:
                    finish = "length"
                    break
                kept.append(word)
            words = kept
        text = "".join(words).rstrip()
        usage = Usage(input_tokens=_input_tokens(request), output_tokens=count_tokens([text]))
        return Completion(text=text, finish_reason=finish, usage=usage, model=request.model)

    async def complete(self, request: CompletionRequest) -> Completion:
        return self._answer(request)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Delta]:
        answer = self._answer(request)
        for piece in split_words(answer.text):
            yield Delta(piece)
        yield Delta("", finish_reason=answer.finish_reason, usage=answer.usage)

    async def embed(self, model: str, texts: Sequence[str]) -> Embeddings:
        vectors = [hash_embedding(text, self._dim) for text in texts]
        return Embeddings(vectors, Usage(input_tokens=count_tokens(texts)))

    async def aclose(self) -> None:
        return None


def _calls_text(calls: Sequence[ToolCall]) -> list[str]:
    return [f"{c.name} {json.dumps(c.arguments, sort_keys=True)}" for c in calls]


def _input_tokens(request: CompletionRequest) -> int:
    texts = [m.content for m in request.messages]
    for message in request.messages:
        texts.extend(_calls_text(message.tool_calls))
    texts.extend(f"{t.name} {t.description}" for t in request.tools)
    return count_tokens(texts)


def _scripted(request: CompletionRequest, text: str, calls: tuple[ToolCall, ...]) -> Completion:
    """A scripted reply; `max_tokens` does not cut it (a script says exactly what the model answers)."""
    usage = Usage(_input_tokens(request), count_tokens([text, *_calls_text(calls)]))
    finish = "tool_calls" if calls else "stop"
    return Completion(text, finish, usage, request.model, calls)
