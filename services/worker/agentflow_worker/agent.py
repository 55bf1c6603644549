"""The agent loop of an agent step: model -> tool calls -> model ... until a final answer.

The step's params carry the agent to start with, the input (rendered) and the pinned definitions of every
agent it can reach (`agents`, see the planner's `agent_pins`). Each turn offers the current agent's tools and
handoffs (`agent_conversation.tools_of`) to its model; a reply without tool calls is the final answer. Tool
calls run in order: a tool of the agent goes to the tool-sandbox (`execute_tool_call`, the same path and
audit as a tool step), `ask_<agent>` runs that agent's loop on a filtered copy of the conversation and returns
its answer, `transfer_to_<agent>` hands the conversation over once the reply's calls are answered. A call to
anything else is answered with an error the model can read (deny by default).

Durability: every model reply, tool result and handoff is journaled (`agent_journal`) before the loop goes on,
and every call's idempotency key names its place (`{run}/{step}/{attempt}/t2c1`). A worker resuming the step
replays the loop from the journal and calls only what is missing; a call interrupted by a crash is made again
under the same key, so the model-gateway and the tool-sandbox answer from their records or attach to it.

Limits: each agent's `max_turns` (model calls per step) and `budget` (tokens / dollars of its model calls)
are checked before each model call; reaching one fails the step (AGENT_MAX_TURNS, AGENT_BUDGET_EXHAUSTED).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from agentflow_worker.agent_calls import AgentCalls, TurnReply, TurnRequest
from agentflow_worker.agent_conversation import Handoff, handoff_of, opening, result_text, tools_of
from agentflow_worker.agent_journal import AgentJournal
from agentflow_worker.calls import Emit, StepFailed, StepResult
from agentflow_worker.gate import ApprovalGate
from agentflow_worker.model import Event, EventType, RunRecord, StepState, error_json
from agentflow_worker.policy import GateCall

__all__ = ["AGENT_EVENTS", "AgentLoop", "run_agent_step", "stop_agent_calls"]

AGENT_EVENTS = (EventType.AGENT_TURN, EventType.AGENT_HANDOFF)

MODEL_TIMEOUT = 300.0
"""Seconds a model call of an agent may take (the step's `timeout_seconds` bounds the whole loop)."""


async def run_agent_step(
    calls: object,
    events: list[Event],
    run: RunRecord,
    step_id: str,
    params: dict[str, Any],
    attempt: int,
    emit: Emit,
    gate: ApprovalGate | None = None,
) -> StepResult:
    """Run (or resume, from `events`: the step's journaled events) the agent loop of one attempt.

    With a `gate`, each tool call of an agent is checked against the approval policies first."""
    if not isinstance(calls, AgentCalls):
        raise StepFailed(error_json("UNIMPLEMENTED", "agent steps need AgentCalls", "STEP_KIND"))

    async def record(kind: EventType, data: dict[str, Any]) -> None:
        await emit(kind, step_id, data)

    journal = AgentJournal(attempt, events, record)
    return await AgentLoop(calls, run, step_id, params, journal, emit, gate).run()


async def stop_agent_calls(
    calls: object, events: list[Event], run: RunRecord, step_id: str, params: dict[str, Any], attempt: int
) -> None:
    """Stop, at the tool-sandbox, every tool call of the attempt that the journal shows asked for but not
    answered (keyed executions outlive their caller: a cancelled run or a timed-out step must stop them)."""
    if not isinstance(calls, AgentCalls):
        return
    journal = AgentJournal(attempt, events, _no_record)
    agents: dict[str, dict[str, Any]] = dict(params.get("agents") or {})
    loop = AgentLoop(calls, run, step_id, params, journal, _no_emit)
    for key, tool in journal.unanswered_calls():
        agent = agents.get(tool[0], {})
        if tool[1] in {t["name"] for t in agent.get("tools") or []}:
            await calls.cancel_tool(run, tool[1], loop.call_key(key))


async def _no_record(kind: EventType, data: dict[str, Any]) -> None:
    raise AssertionError("stopping calls writes nothing")


async def _no_emit(kind: EventType, step_id: str, data: dict[str, Any]) -> None:
    raise AssertionError("stopping calls writes nothing")


class _Spent:
    """An agent's model usage in this step."""

    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, reply: TurnReply) -> None:
        self.input_tokens += reply.input_tokens
        self.output_tokens += reply.output_tokens
        self.cost_usd += reply.cost_usd


class AgentLoop:
    """One attempt of an agent step; see the module docstring."""

    def __init__(
        self,
        calls: AgentCalls,
        run: RunRecord,
        step_id: str,
        params: dict[str, Any],
        journal: AgentJournal,
        emit: Emit,
        gate: ApprovalGate | None = None,
    ) -> None:
        self.calls = calls
        self.gate = gate
        self.run_record = run
        self.step_id = step_id
        self.entry = str(params.get("agent") or "")
        self.input = params.get("input")
        self.agents: dict[str, dict[str, Any]] = dict(params.get("agents") or {})
        self.journal = journal
        self.emit = emit
        self.turns: Counter[str] = Counter()
        self.spent: dict[str, _Spent] = {}
        self.handoffs: list[dict[str, Any]] = []
        self.tool_calls = 0

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> StepResult:
        if self.entry not in self.agents:
            raise StepFailed(
                error_json("FAILED_PRECONDITION", f"step {self.step_id}: agent {self.entry!r} is not pinned")
            )
        text = self.input if isinstance(self.input, str) else json.dumps(self.input)
        conversation = opening(self.agents[self.entry], [], "none", text)
        answer, agent = await self._frame("", self.entry, conversation)
        totals = _Spent()
        for spent in self.spent.values():
            totals.input_tokens += spent.input_tokens
            totals.output_tokens += spent.output_tokens
            totals.cost_usd += spent.cost_usd
        output = {
            "text": answer,
            "agent": agent,
            "turns": sum(self.turns.values()),
            "tool_calls": self.tool_calls,
            "handoffs": self.handoffs,
            "usage": {"input_tokens": totals.input_tokens, "output_tokens": totals.output_tokens},
            "cost_usd": totals.cost_usd,
        }
        meta = {"resumed_from_journal": self.journal.resumed}
        return StepResult(output, totals.input_tokens, totals.output_tokens, meta)

    async def _frame(self, frame: str, name: str, conversation: list[dict[str, Any]]) -> tuple[str, str]:
        """Turns of one conversation (the step's, or a delegated one) until a final answer."""
        turn = 0
        while True:
            turn += 1
            key = f"{frame}t{turn}"
            reply = await self._model_turn(frame, key, name, conversation)
            conversation.append(
                {"role": "assistant", "content": reply.content, "tool_calls": reply.tool_calls}
            )
            if not reply.tool_calls:
                return reply.content, name
            transfer: tuple[Handoff, str] | None = None
            for i, call in enumerate(reply.tool_calls, start=1):
                handoff = handoff_of(self.agents[name], str(call.get("name")))
                ignored = transfer is not None and handoff is not None and handoff.mode == "transfer"
                content = await self._tool_call(frame, f"{key}c{i}", name, call, conversation, ignored)
                conversation.append({"role": "tool", "tool_call_id": call.get("id", ""), "content": content})
                if handoff is not None and handoff.mode == "transfer" and not ignored:
                    transfer = (handoff, str((call.get("arguments") or {}).get("input") or ""))
            if transfer is not None:
                handoff, text = transfer
                await self._handoff(frame, f"{key}h", name, handoff)
                conversation = opening(self.agents[handoff.agent], conversation, handoff.input_filter, text)
                name = handoff.agent

    async def _model_turn(
        self, frame: str, key: str, name: str, conversation: list[dict[str, Any]]
    ) -> TurnReply:
        agent = self.agents[name]
        entry = self.journal.get(key)
        if entry is None:
            self._check_limits(name, agent)
            request = TurnRequest(
                model=str(agent.get("model") or "local"),
                agent=name,
                messages=[dict(m) for m in conversation],
                tools=tools_of(agent, self.agents),
                timeout=MODEL_TIMEOUT,
            )
            reply = await self.calls.complete_turn(self.run_record, self.step_id, request, self.call_key(key))
            data = {"frame": frame, "agent": name, "reply": reply.to_json()}
            entry = await self.journal.write(EventType.AGENT_TURN, key, data)
        reply = TurnReply.from_json(entry["reply"])
        self._count(name, reply)
        return reply

    def _count(self, name: str, reply: TurnReply) -> None:
        self.turns[name] += 1
        self.spent.setdefault(name, _Spent()).add(reply)

    async def _tool_call(
        self,
        frame: str,
        key: str,
        name: str,
        call: dict[str, Any],
        conversation: list[dict[str, Any]],
        ignored: bool,
    ) -> str:
        """The content of the TOOL message answering `call` (journaled before it is used)."""
        self.tool_calls += 1
        entry = self.journal.get(key)
        if entry is None:
            content, failed = await self._answer(frame, key, name, call, conversation, ignored)
            data = {"frame": frame, "agent": name, "call": call, "result": content, "error": failed}
            entry = await self.journal.write(EventType.AGENT_TURN, key, data)
        elif (handoff := handoff_of(self.agents[name], str(call.get("name")))) and handoff.mode == "delegate":
            # Answered before a crash: the delegated turns are not replayed, only counted.
            self._note_handoff(name, handoff)
            for turn in self.journal.turns_under(f"{key}/"):
                self._count(str(turn["agent"]), TurnReply.from_json(turn["reply"]))
        return str(entry["result"])

    async def _answer(
        self,
        frame: str,
        key: str,
        name: str,
        call: dict[str, Any],
        conversation: list[dict[str, Any]],
        ignored: bool,
    ) -> tuple[str, bool]:
        agent = self.agents[name]
        tool = str(call.get("name") or "")
        arguments = call.get("arguments") or {}
        handoff = handoff_of(agent, tool)
        if handoff is not None and handoff.mode == "transfer":
            if ignored:
                return _error("the conversation is already being transferred"), True
            return json.dumps({"transferred_to": handoff.agent}), False
        if handoff is not None:
            await self._handoff(frame, f"{key}h", name, handoff)
            text = str(arguments.get("input") or "") if isinstance(arguments, dict) else ""
            target = self.agents[handoff.agent]
            asked = max(i for i, m in enumerate(conversation) if m.get("role") == "assistant")
            sub = opening(target, conversation[:asked], handoff.input_filter, text)
            answer, _ = await self._frame(f"{key}/", handoff.agent, sub)
            return answer, False
        if tool not in {t["name"] for t in agent.get("tools") or []}:
            offered = ", ".join(t["name"] for t in tools_of(agent, self.agents)) or "none"
            return _error(f"agent {name} may not call {tool!r} (it may call: {offered})"), True
        return await self.execute_tool_call(name, tool, arguments if isinstance(arguments, dict) else {}, key)

    async def execute_tool_call(
        self, agent: str, tool: str, arguments: dict[str, Any], key: str
    ) -> tuple[str, bool]:
        """The one place an agent's tool call reaches the tool-sandbox: (result content, failed).

        Same path as a tool step (ExecuteTool, audit, output chunks as TOOL_OUTPUT events), keyed by the
        call's place in the loop. A failed tool is an answer the model reads; a failure of the mesh itself
        (retryable: UNAVAILABLE, DEADLINE_EXCEEDED, ...) fails the step, for its retry policy.
        """
        if self.gate is not None:
            # A gated call waits for its ticket (AwaitingApproval parks the step, resumed at this call); a
            # rejected or expired one is an answer the model reads, like a tool that failed.
            call = GateCall(
                kind="tool",
                workflow=self.run_record.workflow.removeprefix("workflows/"),
                step_id=self.step_id,
                tool=tool,
                agent=agent,
                arguments=arguments,
            )
            denied = await self.gate.check(self.run_record, call, self.call_key(key), StepState.RUNNING)
            if denied is not None:
                return _error(str(denied["message"])), True
        params = {"tool": tool, "arguments": arguments}
        try:
            result = await self.calls.execute_tool(
                self.run_record, self.step_id, params, self.emit, key=self.call_key(key)
            )
        except StepFailed as exc:
            if exc.retryable:
                raise
            return _error(str(exc.error.get("message") or "the tool failed")), True
        return result_text(result.output), False

    async def _handoff(self, frame: str, key: str, name: str, handoff: Handoff) -> None:
        self._note_handoff(name, handoff)
        data = {
            "frame": frame,
            "from": name,
            "to": handoff.agent,
            "mode": handoff.mode,
            "input_filter": handoff.input_filter,
        }
        await self.journal.write(EventType.AGENT_HANDOFF, key, data)

    def _note_handoff(self, name: str, handoff: Handoff) -> None:
        self.handoffs.append({"from": name, "to": handoff.agent, "mode": handoff.mode})

    # -- limits and keys ---------------------------------------------------------------------
    def _check_limits(self, name: str, agent: dict[str, Any]) -> None:
        max_turns = int(agent.get("max_turns") or 0)
        if max_turns and self.turns[name] >= max_turns:
            raise StepFailed(
                error_json(
                    "FAILED_PRECONDITION",
                    f"step {self.step_id}: agent {name} reached max_turns ({max_turns}) "
                    "without a final answer",
                    "AGENT_MAX_TURNS",
                    agent=name,
                    max_turns=str(max_turns),
                )
            )
        budget = agent.get("budget") or {}
        spent = self.spent.get(name, _Spent())
        max_tokens = int(budget.get("max_tokens") or 0)
        max_cost = float(budget.get("max_cost_usd") or 0.0)
        if (max_tokens and spent.tokens >= max_tokens) or (max_cost and spent.cost_usd >= max_cost):
            raise StepFailed(
                error_json(
                    "RESOURCE_EXHAUSTED",
                    f"step {self.step_id}: agent {name} spent its budget: {spent.tokens} of {max_tokens} "
                    f"tokens, ${spent.cost_usd:.6f} of ${max_cost:.6f}",
                    "AGENT_BUDGET_EXHAUSTED",
                    agent=name,
                    spent_tokens=str(spent.tokens),
                    spent_cost_usd=f"{spent.cost_usd:.6f}",
                )
            )

    def call_key(self, key: str) -> str:
        """The idempotency key of the call journaled (or to be journaled) under `key`."""
        return f"{self.run_record.run_id}/{self.step_id}/{self.journal.attempt}/{key}"


def _error(message: str) -> str:
    return json.dumps({"error": message})
