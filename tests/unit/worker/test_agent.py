"""Agent steps in the engine: the catalog's scripted conversation, journaled turns, resume after a crash,
limits, and what the model is told about tools and handoffs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from agentflow_model_gateway.config import load_models
from agentflow_model_gateway.providers.base import ChatMessage, CompletionRequest, ToolCall, ToolSpec
from agentflow_model_gateway.providers.local import LocalProvider
from agentflow_model_gateway.providers.script import parse_script
from agentflow_planner.agent_catalog import AgentCatalog
from agentflow_planner.registry import validate
from agentflow_worker.agent_calls import TurnReply, TurnRequest
from agentflow_worker.calls import Emit, StepFailed, StepResult
from agentflow_worker.engine import RunEngine
from agentflow_worker.model import EventType, Plan, RunRecord, RunState, StepState, error_json
from agentflow_worker.store import RunStore

from .conftest import SAFETY, FakeCalls, Notes, all_events, create_run

REPO = Path(__file__).resolve().parents[3]
OWNER = "w1"


def demo_plan(**catalog_changes: dict[str, Any]) -> Plan:
    """The catalog's agent-demo workflow compiled by the planner against the catalog's agents."""
    models = {m.alias: m for m in load_models(REPO / "catalog" / "models")}
    agents = AgentCatalog.load(REPO / "catalog", models)
    for name, changes in catalog_changes.items():
        agents.agents[name] = {**agents.agents[name], **changes}
    checked = validate((REPO / "catalog" / "workflows" / "agent-demo.yaml").read_text(), agents)
    assert checked.plan is not None, checked.violations
    data = checked.plan.to_dict()
    return Plan.from_json({**data, "workflow_version": 1})


def _message(m: dict[str, Any]) -> ChatMessage:
    calls = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in m.get("tool_calls") or [])
    return ChatMessage(m["role"], m["content"], calls, m.get("tool_call_id", ""))


class AgentFakeCalls(FakeCalls):
    """The catalog's scripted local model, and tools that behave like the sandbox: a key that completed
    answers from its record; `gates` hold a tool call (by tool name) until set."""

    def __init__(self) -> None:
        super().__init__()
        models = {m.alias: m for m in load_models(REPO / "catalog" / "models")}
        self.provider = LocalProvider(script=parse_script(models["local-script"].script))
        self.model_keys: list[str] = []
        self.requests: list[TurnRequest] = []
        self.executions: dict[str, Any] = {}
        self.side_effects: list[str] = []
        self.tool_started: dict[str, asyncio.Event] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.tool_failure: dict[str, dict[str, Any]] = {}
        self.cancelled_tools: list[tuple[str, str]] = []

    async def complete_turn(self, run: RunRecord, step_id: str, request: TurnRequest, key: str) -> TurnReply:
        self.model_keys.append(key)
        self.requests.append(request)
        tools = tuple(ToolSpec(t["name"], t["description"], t["parameters"]) for t in request.tools)
        messages = [_message(m) for m in request.messages]
        done = await self.provider.complete(
            CompletionRequest(request.model, messages, tools=tools, agent=request.agent)
        )
        calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in done.tool_calls]
        return TurnReply(done.text, calls, done.usage.input_tokens, done.usage.output_tokens, 0.001, "m")

    async def execute_tool(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, *, key: str
    ) -> StepResult:
        if key in self.executions:
            return StepResult(self.executions[key], meta={"replayed": True})
        tool = params["tool"]
        self.tool_started.setdefault(tool, asyncio.Event()).set()
        if tool in self.gates:
            await self.gates[tool].wait()
        if tool in self.tool_failure:
            raise StepFailed(self.tool_failure[tool])
        if tool == "word-count":
            text = params["arguments"]["text"]
            output: Any = {"words": len(text.split()), "chars": len(text)}
        else:
            output = "".join(f"tick {i}\n" for i in range(1, int(params["arguments"]["count"]) + 1))
        await emit(EventType.TOOL_OUTPUT, step_id, {"stream": "stdout", "text": json.dumps(output)})
        self.side_effects.append(key)
        self.executions[key] = output
        return StepResult(output)

    async def cancel_tool(self, run: RunRecord, tool: str, key: str) -> None:
        self.cancelled_tools.append((tool, key))


@pytest.fixture
def agent_calls() -> AgentFakeCalls:
    return AgentFakeCalls()


async def claimed(store: RunStore, plan: Plan) -> RunRecord:
    run = await create_run(store, plan, run_input={"text": "tides turn twice a day"})
    assert await store.claim(run.run_id, OWNER, 600)
    fresh = await store.get(run.run_id)
    assert fresh is not None
    return fresh


async def execute(store: RunStore, calls: FakeCalls, run_id: str) -> RunState:
    run = await store.get(run_id)
    assert run is not None
    return await asyncio.wait_for(RunEngine(store, calls, OWNER, Notes()).execute(run), SAFETY)


async def test_the_scripted_conversation_uses_two_tools_a_delegate_and_a_transfer(
    store: RunStore, agent_calls: AgentFakeCalls
) -> None:
    run = await claimed(store, demo_plan())

    assert await execute(store, agent_calls, run.run_id) is RunState.SUCCEEDED

    stored = await store.get(run.run_id)
    assert stored is not None
    output = stored.steps[0].output
    assert output["agent"] == "publisher"
    assert output["text"].startswith("Published (tick 1\ntick 2\n). Publish it. The reviewer said: Approved:")
    assert "Is a draft of 9 words fine to publish?" in output["text"]
    assert output["handoffs"] == [
        {"from": "editor", "to": "reviewer", "mode": "delegate"},
        {"from": "editor", "to": "publisher", "mode": "transfer"},
    ]
    # editor: 3 turns; reviewer: 1; publisher: 2 (the ticker, then the answer).
    assert output["turns"] == 6
    assert [r.agent for r in agent_calls.requests] == [
        "editor",
        "editor",
        "reviewer",
        "editor",
        "publisher",
        "publisher",
    ]
    assert output["usage"]["input_tokens"] > 0
    assert output["cost_usd"] == pytest.approx(0.006)
    assert (stored.input_tokens, stored.output_tokens) == (
        output["usage"]["input_tokens"],
        output["usage"]["output_tokens"],
    )
    assert len(agent_calls.side_effects) == 2

    # What the models were offered: the agent's tools, then its handoffs as tools.
    editor = agent_calls.requests[0]
    offered = ["word-count", "ticker", "ask_reviewer", "transfer_to_publisher"]
    assert [t["name"] for t in editor.tools] == offered
    assert editor.messages[0]["role"] == "system"
    assert editor.messages[1]["content"] == "Please check this draft: tides turn twice a day"
    # Delegation with input_filter none: the reviewer sees only its instructions and the question.
    reviewer = agent_calls.requests[2]
    assert [m["role"] for m in reviewer.messages] == ["system", "user"]
    # Transfer with last_message: the publisher sees the last user message and the transfer's input.
    publisher = agent_calls.requests[4]
    assert [m["role"] for m in publisher.messages] == ["system", "user", "user"]
    assert publisher.messages[0]["content"] == "You publish drafts and confirm when done."

    events = await all_events(store, run.run_id)
    kinds = [e.type for e in events if e.type in (EventType.AGENT_TURN, EventType.AGENT_HANDOFF)]
    assert kinds.count(EventType.AGENT_HANDOFF) == 2
    # Six model turns and five tool results (two tools, ask, transfer, ticker... see the script).
    turns = [e.data for e in events if e.type is EventType.AGENT_TURN]
    assert sum(1 for t in turns if "reply" in t) == 6
    assert sum(1 for t in turns if "result" in t) == 4
    assert all(t["attempt"] == 1 for t in turns)
    # Keys name each call's place: run/step/attempt/turn[/call].
    assert agent_calls.model_keys[0] == f"{run.run_id}/publish/1/t1"
    assert agent_calls.model_keys[2] == f"{run.run_id}/publish/1/t2c1/t1"
    assert set(agent_calls.executions) == {f"{run.run_id}/publish/1/t1c1", f"{run.run_id}/publish/1/t4c1"}


async def test_a_crash_mid_loop_resumes_at_the_turn_without_repeating_a_completed_call(
    store: RunStore, agent_calls: AgentFakeCalls
) -> None:
    run = await claimed(store, demo_plan())
    agent_calls.gates["ticker"] = asyncio.Event()
    first = asyncio.create_task(execute(store, agent_calls, run.run_id))
    await asyncio.wait_for(agent_calls.tool_started.setdefault("ticker", asyncio.Event()).wait(), SAFETY)
    first.cancel()  # the worker dies while the publisher's ticker call runs
    with pytest.raises(asyncio.CancelledError):
        await first
    calls_before = list(agent_calls.model_keys)
    assert len(calls_before) == 5
    stored = await store.get(run.run_id)
    assert stored is not None and stored.steps[0].state is StepState.RUNNING

    agent_calls.gates.pop("ticker")
    assert await execute(store, agent_calls, run.run_id) is RunState.SUCCEEDED

    # Only the missing turn was called: the publisher's final answer (turn 5 of the step's conversation).
    # The interrupted ticker call was made again under the same key; word-count (journaled) was not.
    assert agent_calls.model_keys[len(calls_before) :] == [f"{run.run_id}/publish/1/t5"]
    assert sorted(agent_calls.side_effects) == sorted(set(agent_calls.side_effects))
    assert len(agent_calls.side_effects) == 2
    resumed = await store.get(run.run_id)
    assert resumed is not None
    assert resumed.steps[0].output["turns"] == 6
    assert resumed.steps[0].output["handoffs"][0]["to"] == "reviewer"
    events = await all_events(store, run.run_id)
    started = [e.data for e in events if e.type is EventType.STEP_STARTED]
    assert started[-1] == {"attempt": 1, "resumed": True}
    # Each journaled entry exists once.
    keys = [e.data["key"] for e in events if e.type in (EventType.AGENT_TURN, EventType.AGENT_HANDOFF)]
    assert len(keys) == len(set(keys))


async def test_cancelling_the_run_stops_the_tool_call_a_dead_worker_left_running(
    store: RunStore, agent_calls: AgentFakeCalls
) -> None:
    run = await claimed(store, demo_plan())
    agent_calls.gates["ticker"] = asyncio.Event()
    first = asyncio.create_task(execute(store, agent_calls, run.run_id))
    await asyncio.wait_for(agent_calls.tool_started.setdefault("ticker", asyncio.Event()).wait(), SAFETY)
    first.cancel()  # the worker dies; the keyed ticker execution would go on at the sandbox
    with pytest.raises(asyncio.CancelledError):
        await first

    orphaned = await store.get(run.run_id)
    assert orphaned is not None
    engine = RunEngine(store, agent_calls, OWNER, Notes())
    assert await asyncio.wait_for(engine.cancel(orphaned, "stop"), SAFETY) is RunState.CANCELLED
    # Only the unanswered call of an agent's own tool is stopped (not the answered word-count, nor handoffs).
    assert agent_calls.cancelled_tools == [("ticker", f"{run.run_id}/publish/1/t4c1")]


async def test_max_turns_fails_the_step_clearly(store: RunStore, agent_calls: AgentFakeCalls) -> None:
    run = await claimed(store, demo_plan(editor={"max_turns": 2}))

    assert await execute(store, agent_calls, run.run_id) is RunState.FAILED

    stored = await store.get(run.run_id)
    assert stored is not None and stored.error is not None
    assert stored.error["reason"] == "AGENT_MAX_TURNS"
    assert "agent editor reached max_turns (2)" in stored.error["message"]


async def test_an_agent_budget_stops_the_loop(store: RunStore, agent_calls: AgentFakeCalls) -> None:
    run = await claimed(store, demo_plan(editor={"budget": {"max_tokens": 10, "max_cost_usd": 0}}))

    assert await execute(store, agent_calls, run.run_id) is RunState.FAILED

    stored = await store.get(run.run_id)
    assert stored is not None and stored.error is not None
    assert stored.error["reason"] == "AGENT_BUDGET_EXHAUSTED"
    assert len(agent_calls.model_keys) == 1


async def test_a_failed_tool_is_an_answer_and_an_unknown_tool_is_denied(
    store: RunStore, agent_calls: AgentFakeCalls
) -> None:
    agent_calls.tool_failure["word-count"] = error_json("FAILED_PRECONDITION", "tool exited with 3")
    # The publisher is allowed no tool: its scripted ticker call is refused without running.
    run = await claimed(store, demo_plan(publisher={"tools": []}))

    assert await execute(store, agent_calls, run.run_id) is RunState.SUCCEEDED

    events = await all_events(store, run.run_id)
    results = [e.data for e in events if e.type is EventType.AGENT_TURN and "result" in e.data]
    assert results[0]["error"] is True
    assert "tool exited with 3" in results[0]["result"]
    ticker = next(r for r in results if r["call"]["name"] == "ticker")
    assert ticker["error"] is True
    assert "agent publisher may not call 'ticker'" in ticker["result"]
    assert agent_calls.side_effects == []


async def test_an_agent_step_fails_cleanly_without_agent_calls(store: RunStore) -> None:
    run = await claimed(store, demo_plan())

    assert await execute(store, FakeCalls(), run.run_id) is RunState.FAILED

    stored = await store.get(run.run_id)
    assert stored is not None and stored.error is not None
    assert stored.error["code"] == "UNIMPLEMENTED"
