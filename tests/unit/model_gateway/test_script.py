"""The scriptable local model: rules, placeholders, tool calls, and keyed replay of tool-call answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentflow_model_gateway.config import ConfigError, ModelConfig, load_models
from agentflow_model_gateway.gateway import CallInfo, CompleteOptions, ModelGateway
from agentflow_model_gateway.providers.base import ChatMessage, CompletionRequest, ToolCall, ToolSpec
from agentflow_model_gateway.providers.local import LocalProvider
from agentflow_model_gateway.providers.script import ScriptError, parse_script
from agentflow_model_gateway.routing import Router, check_scripts
from agentflow_runtime.db import Database

REPO = Path(__file__).resolve().parents[3]

SCRIPT = [
    {
        "when": {"agent": "triage", "last_role": "user"},
        "reply": {"tool_calls": [{"name": "lookup", "arguments": {"id": "${last_user}", "n": 2}}]},
    },
    {
        "when": {"agent": "triage", "last_tool": "lookup"},
        "reply": {
            "text": "found ${last_result.name}",
            "tool_calls": [{"name": "transfer_to_billing", "arguments": {"count": "${last_result.count}"}}],
        },
    },
    {"when": {"agent": "billing", "user_contains": "REFUND"}, "reply": {"text": "refund for ${first_user}"}},
]


def request(*messages: ChatMessage, agent: str = "triage") -> CompletionRequest:
    return CompletionRequest("local-script", list(messages), tools=(ToolSpec("lookup"),), agent=agent)


async def test_rules_pick_tool_calls_and_fill_placeholders_from_the_conversation() -> None:
    provider = LocalProvider(script=parse_script(SCRIPT))
    first = await provider.complete(request(ChatMessage("user", "A-17")))
    assert first.finish_reason == "tool_calls"
    assert first.tool_calls == (ToolCall("call_1_1", "lookup", {"id": "A-17", "n": 2}),)
    assert first.usage.output_tokens > 0

    conversation = [
        ChatMessage("user", "A-17"),
        ChatMessage("assistant", "", first.tool_calls),
        ChatMessage("tool", '{"name": "Ada", "count": 3}', tool_call_id="call_1_1"),
    ]
    second = await provider.complete(request(*conversation))
    assert second.text == "found Ada"
    # A whole-value placeholder keeps the JSON type of what it reads.
    assert second.tool_calls == (ToolCall("call_2_1", "transfer_to_billing", {"count": 3}),)

    billing = await provider.complete(request(ChatMessage("user", "a refund please"), agent="billing"))
    assert (billing.text, billing.finish_reason, billing.tool_calls) == (
        "refund for a refund please",
        "stop",
        (),
    )


async def test_a_conversation_no_rule_matches_gets_the_local_draft() -> None:
    provider = LocalProvider(script=parse_script(SCRIPT))
    reply = await provider.complete(request(ChatMessage("user", "Write about tides"), agent="nobody"))
    assert reply.text.startswith("Draft about tides")
    assert reply.tool_calls == ()


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        ("nope", "must be a list"),
        ([{"when": {"agent": "a"}}], "`reply`"),
        ([{"when": {"colour": "red"}, "reply": {"text": "x"}}], "conditions are"),
        ([{"reply": {}}], "give `text`"),
        ([{"reply": {"tool_calls": [{"arguments": {}}]}}], "needs a `name`"),
        ([{"reply": {"text": "${secret}"}}], "unknown ${secret}"),
        ([{"when": {"turn": "one"}, "reply": {"text": "x"}}], "turn: must be an integer"),
    ],
)
def test_bad_scripts_are_refused_with_the_problem(script: object, problem: str) -> None:
    with pytest.raises(ScriptError, match="script") as caught:
        parse_script(script)  # type: ignore[arg-type]
    assert problem in str(caught.value)


def test_the_catalog_scripts_parse_and_a_bad_one_stops_the_gateway() -> None:
    check_scripts(load_models(REPO / "catalog" / "models"))
    bad = ModelConfig("x", "local", "x", script=({"reply": {}},))
    with pytest.raises(ConfigError, match="models/x"):
        check_scripts([bad])


async def test_a_repeated_key_replays_the_recorded_tool_calls(db: Database) -> None:
    model = ModelConfig("scripted", "local", "scripted", script=tuple(SCRIPT))
    gateway = ModelGateway(Router([model]), db)
    call = CallInfo("acme", "runs/r1", "s1", "runs/r1/s1/1/t1")
    options = CompleteOptions(tools=(ToolSpec("lookup", "finds", {"type": "object"}),), agent="triage")
    messages = [ChatMessage("user", "A-17")]

    first = await gateway.complete("scripted", messages, call, options)
    again = await gateway.complete("scripted", messages, call, options)

    assert first.tool_calls == (ToolCall("call_1_1", "lookup", {"id": "A-17", "n": 2}),)
    assert (again.replayed, again.tool_calls, again.finish_reason) == (True, first.tool_calls, "tool_calls")
