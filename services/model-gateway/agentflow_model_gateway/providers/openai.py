"""A provider for any OpenAI-compatible HTTP API: chat completions (plain and SSE) and embeddings."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
from agentflow_runtime.errors import FailedPrecondition, Unavailable
from agentflow_runtime.tokens import count_tokens

from .base import ChatMessage, Completion, CompletionRequest, Delta, Embeddings, ToolCall, Usage
from .errors import from_response, from_transport

__all__ = ["OpenAIProvider"]

_NAME = "openai"


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    return Usage(int(data.get("prompt_tokens", 0)), int(data.get("completion_tokens", 0)))


def _finish(reason: Any) -> str:
    return reason if reason in ("length", "tool_calls") else "stop"


def _message(message: ChatMessage) -> dict[str, Any]:
    body: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        body["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        body["tool_call_id"] = message.tool_call_id
    return body


def _calls(message: Any) -> tuple[ToolCall, ...]:
    calls = []
    for raw in message.get("tool_calls") or []:
        function = raw.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = {"_unparsed": function.get("arguments")}
        calls.append(
            ToolCall(
                str(raw.get("id", "")),
                str(function.get("name", "")),
                arguments if isinstance(arguments, dict) else {"value": arguments},
            )
        )
    return tuple(calls)


class OpenAIProvider:
    """Talks to `{base_url}/chat/completions` and `{base_url}/embeddings` with a bearer key."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key_env: str = "",
        timeout_seconds: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._api_key_env = api_key_env
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", timeout=httpx.Timeout(timeout_seconds), transport=transport
        )

    def _headers(self) -> dict[str, str]:
        if not self._api_key_env:
            return {}
        key = os.environ.get(self._api_key_env)
        if not key:
            raise FailedPrecondition(
                f"the model's API key is not configured: set ${self._api_key_env}",
                reason="PROVIDER_KEY_MISSING",
                metadata={"env": self._api_key_env},
            )
        return {"Authorization": f"Bearer {key}"}

    @staticmethod
    def _body(request: CompletionRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [_message(m) for m in request.messages],
        }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        if request.max_tokens:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await self._client.post(path, json=body, headers=self._headers())
        except httpx.TransportError as exc:
            raise from_transport(_NAME, exc) from exc
        if response.is_error:
            raise from_response(_NAME, response)
        try:
            return response.json()
        except ValueError as exc:
            raise Unavailable(f"{_NAME} answered with invalid JSON") from exc

    async def complete(self, request: CompletionRequest) -> Completion:
        data = await self._post("chat/completions", self._body(request))
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            calls = _calls(choice["message"])
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise Unavailable(f"{_NAME} answered without a choice") from exc
        usage = _usage(data.get("usage")) or Usage(
            count_tokens(m.content for m in request.messages), count_tokens([text])
        )
        finish = "tool_calls" if calls else _finish(choice.get("finish_reason"))
        return Completion(text, finish, usage, str(data.get("model", request.model)), calls)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Delta]:
        body = {**self._body(request), "stream": True, "stream_options": {"include_usage": True}}
        finish: str | None = None
        usage: Usage | None = None
        produced: list[str] = []
        try:
            async with self._client.stream(
                "POST", "chat/completions", json=body, headers=self._headers()
            ) as resp:
                if resp.is_error:
                    await resp.aread()
                    raise from_response(_NAME, resp)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[len("data:") :].strip()
                    if payload == "[DONE]":
                        break
                    chunk = json.loads(payload)
                    usage = _usage(chunk.get("usage")) or usage
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or ""
                        if text:
                            produced.append(text)
                            yield Delta(text)
                        if choice.get("finish_reason"):
                            finish = _finish(choice["finish_reason"])
        except httpx.TransportError as exc:
            raise from_transport(_NAME, exc) from exc
        except ValueError as exc:
            raise Unavailable(f"{_NAME} sent an invalid stream event") from exc
        if usage is None:
            usage = Usage(count_tokens(m.content for m in request.messages), count_tokens(produced))
        yield Delta("", finish_reason=finish or "stop", usage=usage)

    async def embed(self, model: str, texts: Sequence[str]) -> Embeddings:
        data = await self._post("embeddings", {"model": model, "input": list(texts)})
        try:
            items = sorted(data["data"], key=lambda item: int(item["index"]))
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except (KeyError, TypeError, ValueError) as exc:
            raise Unavailable(f"{_NAME} answered without embeddings") from exc
        if len(vectors) != len(texts):
            raise Unavailable(f"{_NAME} returned {len(vectors)} embeddings for {len(texts)} texts")
        usage = _usage(data.get("usage")) or Usage(count_tokens(texts))
        return Embeddings(vectors, Usage(input_tokens=usage.input_tokens))

    async def aclose(self) -> None:
        await self._client.aclose()
