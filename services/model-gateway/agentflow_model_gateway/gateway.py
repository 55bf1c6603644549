"""The model-gateway's use cases: route, call the provider, price the usage, keep the ledger."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agentflow_runtime.db import Database
from agentflow_runtime.errors import FailedPrecondition, InvalidArgument

from . import store
from .config import ModelConfig
from .ledger import Ledger, open_ledger
from .providers.base import (
    ROLES,
    ChatMessage,
    CompletionRequest,
    Embeddings,
    Provider,
    ToolCall,
    ToolSpec,
    Usage,
)
from .routing import Router

__all__ = ["CallInfo", "CompleteOptions", "CompleteResult", "ModelGateway", "StreamEvent"]


@dataclass(frozen=True)
class CallInfo:
    """Who is calling and for what: the ledger's attribution and the idempotency key."""

    tenant: str
    run: str = ""
    step_id: str = ""
    idempotency_key: str = ""


@dataclass(frozen=True)
class CompleteOptions:
    """What shapes a completion besides the conversation."""

    max_tokens: int | None = None
    temperature: float | None = None
    tools: tuple[ToolSpec, ...] = ()
    agent: str = ""


@dataclass(frozen=True)
class CompleteResult:
    """A priced answer; `replayed` when it was recorded by an earlier call with the same key."""

    model: str
    text: str
    finish_reason: str
    usage: Usage
    cost_usd: float
    replayed: bool = False
    tool_calls: tuple[ToolCall, ...] = ()

    def to_record(self) -> dict[str, Any]:
        record = {
            "model": self.model,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cost_usd": self.cost_usd,
        }
        if self.tool_calls:
            record["tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls
            ]
        return record

    @classmethod
    def from_record(cls, data: dict[str, Any], *, replayed: bool) -> CompleteResult:
        usage = Usage(int(data["input_tokens"]), int(data["output_tokens"]))
        calls = tuple(
            ToolCall(str(c["id"]), str(c["name"]), dict(c.get("arguments") or {}))
            for c in data.get("tool_calls") or []
        )
        return cls(
            data["model"],
            data["text"],
            data["finish_reason"],
            usage,
            float(data["cost_usd"]),
            replayed,
            calls,
        )


@dataclass(frozen=True)
class StreamEvent:
    """A text delta; the last event carries `finish_reason`, `usage` and `cost_usd`."""

    delta: str
    finish_reason: str = ""
    usage: Usage | None = None
    cost_usd: float = 0.0


def _check_messages(messages: Sequence[ChatMessage]) -> None:
    if not messages:
        raise InvalidArgument("messages must not be empty", violations=[("messages", "at least one message")])
    bad = [
        (f"messages[{i}].role", f"must be one of {', '.join(ROLES)}")
        for i, message in enumerate(messages)
        if message.role not in ROLES
    ]
    bad += [
        (f"messages[{i}].tool_call_id", "a tool message answers a tool call: give its id")
        for i, message in enumerate(messages)
        if message.role == "tool" and not message.tool_call_id
    ]
    if bad:
        raise InvalidArgument("a message has no valid role", violations=bad)


def _name(model: ModelConfig) -> str:
    return f"models/{model.alias}"


def _message_digest(message: ChatMessage) -> list[Any]:
    """A message as hashed: role and content, plus tool calls / the answered call id when present (so
    a plain conversation hashes as it did before tool calls existed)."""
    parts: list[Any] = [message.role, message.content]
    if message.tool_calls or message.tool_call_id:
        calls = [[c.id, c.name, c.arguments] for c in message.tool_calls]
        parts += [calls, message.tool_call_id]
    return parts


def _request_digest(model: str, messages: Sequence[ChatMessage], options: CompleteOptions) -> str:
    """What makes two completion requests the same request, hashed."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [_message_digest(m) for m in messages],
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
    }
    if options.tools:
        body["tools"] = [[t.name, t.description, t.parameters] for t in options.tools]
    if options.agent:
        body["agent"] = options.agent
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _key_reused(key: str) -> FailedPrecondition:
    return FailedPrecondition(
        "idempotency key was already used for a different request",
        reason="IDEMPOTENCY_KEY_REUSED",
        metadata={"idempotency_key": key},
    )


def _replay(recorded: dict[str, Any], digest: str, key: str) -> CompleteResult:
    """The recorded answer for a repeated key; a key reused for a different request is refused."""
    if recorded.get("request_digest", digest) != digest:
        raise _key_reused(key)
    return CompleteResult.from_record(recorded, replayed=True)


class ModelGateway:
    """See the module docstring."""

    def __init__(self, router: Router, db: Database, ledger: Ledger | None = None) -> None:
        self._router = router
        self._ledger = ledger or open_ledger(db)
        self._inflight: dict[tuple[str, str], tuple[str, asyncio.Task[CompleteResult]]] = {}

    @property
    def models(self) -> list[ModelConfig]:
        return self._router.models

    async def aclose(self) -> None:
        """Close the ledger's connections."""
        await self._ledger.close()

    async def complete(
        self,
        model_name: str,
        messages: Sequence[ChatMessage],
        call: CallInfo,
        options: CompleteOptions | None = None,
    ) -> CompleteResult:
        """Completes a conversation; a repeated idempotency key returns the recorded result.

        A keyed call runs in a task of its own: a repeat of a key still in flight in this process waits
        for that call and answers with its result (one provider call), and a caller that goes away (a
        worker killed mid-step) does not abandon a call whose answer its retry will ask for.
        """
        options = options or CompleteOptions()
        model, provider = self._router.resolve(model_name)
        _check_messages(messages)
        digest = _request_digest(model.alias, messages, options)
        if not call.idempotency_key:
            return await self._complete(model, provider, messages, call, digest, options)
        recorded = await self._ledger.find(call.tenant, call.idempotency_key)
        if recorded is not None:
            return _replay(recorded, digest, call.idempotency_key)
        key = (call.tenant, call.idempotency_key)
        inflight = self._inflight.get(key)
        if inflight is None:
            task = asyncio.get_running_loop().create_task(
                self._complete(model, provider, messages, call, digest, options)
            )
            inflight = (digest, task)
            self._inflight[key] = inflight
            task.add_done_callback(lambda done: self._forget(key, done))
            return await asyncio.shield(task)
        if inflight[0] != digest:
            raise _key_reused(call.idempotency_key)
        return replace(await asyncio.shield(inflight[1]), replayed=True)

    def _forget(self, key: tuple[str, str], done: asyncio.Task[CompleteResult]) -> None:
        self._inflight.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: a caller that went away must not leave it "never retrieved"

    async def _complete(
        self,
        model: ModelConfig,
        provider: Provider,
        messages: Sequence[ChatMessage],
        call: CallInfo,
        digest: str,
        options: CompleteOptions,
    ) -> CompleteResult:
        request = CompletionRequest(
            model.provider_model,
            list(messages),
            options.max_tokens,
            options.temperature,
            options.tools,
            options.agent,
        )
        completion = await provider.complete(request)
        result = CompleteResult(
            _name(model),
            completion.text,
            completion.finish_reason,
            completion.usage,
            model.cost_usd(completion.usage),
            tool_calls=completion.tool_calls,
        )
        record = {**result.to_record(), "request_digest": digest}
        if await self._record(model, "complete", result.usage, call, record):
            return result
        # Another call with the same key recorded first (another replica): answer as it did.
        recorded = await self._ledger.find(call.tenant, call.idempotency_key)
        return _replay(recorded or record, digest, call.idempotency_key)

    async def stream(
        self,
        model_name: str,
        messages: Sequence[ChatMessage],
        call: CallInfo,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Streams an answer; its usage is recorded when the provider finishes."""
        model, provider = self._router.resolve(model_name)
        _check_messages(messages)
        request = CompletionRequest(model.provider_model, list(messages), max_tokens, temperature)
        async for delta in provider.stream(request):
            if delta.usage is None:
                if delta.text:
                    yield StreamEvent(delta.text)
                continue
            cost = model.cost_usd(delta.usage)
            await self._record(model, "stream", delta.usage, CallInfo(call.tenant, call.run, call.step_id))
            yield StreamEvent(delta.text, delta.finish_reason or "stop", delta.usage, cost)
            return

    async def embed(self, model_name: str, texts: Sequence[str], call: CallInfo) -> Embeddings:
        """One vector per text, in order."""
        model, provider = self._router.resolve(model_name)
        if not texts:
            raise InvalidArgument("texts must not be empty", violations=[("texts", "at least one text")])
        embeddings = await provider.embed(model.provider_model, list(texts))
        await self._record(model, "embed", embeddings.usage, CallInfo(call.tenant, call.run, call.step_id))
        return embeddings

    async def _record(
        self,
        model: ModelConfig,
        operation: str,
        usage: Usage,
        call: CallInfo,
        response: dict[str, Any] | None = None,
    ) -> bool:
        return await self._ledger.record(
            store.UsageRecord(
                tenant=call.tenant,
                model=model.alias,
                operation=operation,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=model.cost_usd(usage),
                run=call.run,
                step_id=call.step_id,
                idempotency_key=call.idempotency_key,
                response=response,
            ),
        )
