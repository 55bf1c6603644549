"""Tool calls through the OpenAI-compatible provider: tools and tool messages out, tool calls back."""

from __future__ import annotations

import json
from typing import Any

import httpx
from agentflow_model_gateway.providers.base import ChatMessage, CompletionRequest, ToolCall, ToolSpec
from agentflow_model_gateway.providers.openai import OpenAIProvider


async def test_tools_and_tool_calls_map_to_chat_completions() -> None:
    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c9", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 7}'}}
            ],
        }
        body = {"model": "m", "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
        return httpx.Response(200, json=body)

    provider = OpenAIProvider("http://fake/v1", transport=httpx.MockTransport(answer))
    messages = [
        ChatMessage("user", "find 7"),
        ChatMessage("assistant", "", (ToolCall("c1", "lookup", {"id": 6}),)),
        ChatMessage("tool", '{"found": false}', tool_call_id="c1"),
    ]
    tools = (ToolSpec("lookup", "finds things", {"type": "object"}),)
    completion = await provider.complete(CompletionRequest("m", messages, tools=tools))
    await provider.aclose()

    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls == (ToolCall("c9", "lookup", {"id": 7}),)
    assert completion.text == ""
    body = sent[0]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "lookup", "description": "finds things", "parameters": {"type": "object"}},
        }
    ]
    assert body["messages"][1]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"id": 6}'}
    assert body["messages"][2] == {"role": "tool", "content": '{"found": false}', "tool_call_id": "c1"}
