"""Approval gates in the engine over a real store: park durably, decide once, resume, expire, cancel."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from agentflow_runtime.db import Database
from agentflow_runtime.errors import FailedPrecondition, PermissionDenied
from agentflow_worker.approvals import Approvals
from agentflow_worker.engine import RunEngine
from agentflow_worker.expiry import ExpirySweeper
from agentflow_worker.gate import ApprovalGate, ParkRequest
from agentflow_worker.model import EventType, Plan, RunRecord, RunState, StepState
from agentflow_worker.policy import GateCall, PolicySet, parse_policy
from agentflow_worker.store import RunStore
from agentflow_worker.tables import approvals, runs
from agentflow_worker.waiting import Settled, cancel_waiting, note_tickets, park
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .conftest import SAFETY, FakeCalls, Notes, all_events, assert_contiguous, create_run, plan_of, step
from .test_agent import AgentFakeCalls, demo_plan

OWNER = "w1"


def policies(ttl: float = 600, on_expiry: str = "fail") -> PolicySet:
    text = f"""
id: ops
rules:
  - id: prod-deploys
    description: Production deploys need an admin.
    match:
      tools: [deploy]
      arguments: [{{path: env, regex: "^prod"}}]
    approvers: [admin]
    ttl_seconds: {ttl}
    on_expiry: {on_expiry}
"""
    return PolicySet(tuple(parse_policy(text, "ops.yaml")))


def deploy_plan(env: str = "{{ input.env }}") -> Plan:
    """`build` and `ship` side by side (ship is gated in production), `notify` after both."""
    return plan_of(
        step("build", "tool", tool="compile"),
        step("ship", "tool", tool="deploy", arguments={"env": env, "version": "1.2"}),
        step(
            "notify",
            "tool",
            ("build", "ship"),
            tool="mail",
            arguments={"text": "{{ steps.ship.output.text }}"},
        ),
    )


class Harness:
    def __init__(self, store: RunStore, calls: FakeCalls, rules: PolicySet) -> None:
        self.store = store
        self.calls = calls
        self.gate = ApprovalGate(rules, store.db)
        self.settled: list[Settled] = []

        async def note(settled: Settled) -> None:
            self.settled.append(settled)

        self.book = Approvals(store.db, note)
        self.sweeper = ExpirySweeper(store.db, note)

    async def start(self, env: str = "production") -> RunRecord:
        run = await create_run(self.store, deploy_plan(), run_input={"env": env})
        return await self.execute(run.run_id)

    async def execute(self, run_id: str) -> RunRecord:
        assert await self.store.claim(run_id, OWNER, 600)
        run = await self.reload(run_id)
        engine = RunEngine(self.store, self.calls, OWNER, Notes(), gate=self.gate)
        await asyncio.wait_for(engine.execute(run), SAFETY)
        return await self.reload(run_id)

    async def reload(self, run_id: str) -> RunRecord:
        run = await self.store.get(run_id)
        assert run is not None
        return run

    async def tickets(self, run_id: str) -> list[dict[str, Any]]:
        return await self.book.list_tickets("acme", 0, 50, run=f"runs/{run_id}")


def states(run: RunRecord) -> dict[str, StepState]:
    return {s.step_id: s.state for s in run.steps}


async def lease(db: Database, run_id: str) -> tuple[Any, Any]:
    async with db.connect() as conn:
        row = (
            await conn.execute(
                select(runs.c.lease_owner, runs.c.lease_expires).where(runs.c.run_id == run_id)
            )
        ).one()
    return row.lease_owner, row.lease_expires


async def test_a_gated_step_parks_the_run_durably_and_an_approval_resumes_it(
    store: RunStore, calls: FakeCalls
) -> None:
    h = Harness(store, calls, policies())
    run = await h.start()

    assert run.state is RunState.WAITING
    assert states(run) == {
        "build": StepState.SUCCEEDED,
        "ship": StepState.WAITING,
        "notify": StepState.PENDING,
    }
    assert calls.called() == ["build"], "the gated call was not made"
    assert await lease(store.db, run.run_id) == (None, None), "no worker holds a waiting run"
    assert run.run_id not in await store.claimable(100), "nothing claims it"
    [ticket] = await h.tickets(run.run_id)
    assert ticket["state"] == "PENDING" and ticket["step_id"] == "ship"
    assert ticket["rule"] == "ops/prod-deploys" and ticket["approver_roles"] == ["admin"]
    assert ticket["call_key"] == f"{run.run_id}/ship/1"
    assert ticket["request"]["tool"] == "deploy"
    assert ticket["request"]["arguments"] == {"env": "production", "version": "1.2"}
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    requested = events[-1]
    assert requested.type is EventType.APPROVAL_REQUESTED and requested.step_id == "ship"
    assert requested.run_state is RunState.WAITING
    assert requested.data["approval"] == f"approvals/{ticket['approval_id']}"

    name = f"approvals/{ticket['approval_id']}"
    noted = await note_tickets(store.db, run)
    assert noted.pending_approvals == [name]
    assert {s.step_id: s.approval for s in noted.steps} == {"build": "", "ship": name, "notify": ""}
    with pytest.raises(PermissionDenied) as denied:
        await h.book.decide("acme", "developer", "dev", name, True, "")
    assert denied.value.reason == "ROLE_NOT_ALLOWED"
    decided = await h.book.decide("acme", "admin", "ada", name, True, "go")
    assert decided["state"] == "APPROVED" and decided["decided_by"] == "ada"
    assert [s.resumed for s in h.settled] == [True]
    resumed = await h.reload(run.run_id)
    assert resumed.state is RunState.PENDING and states(resumed)["ship"] is StepState.PENDING
    with pytest.raises(FailedPrecondition) as again:
        await h.book.decide("acme", "admin", "ada", name, True, "twice")
    assert again.value.reason == "APPROVAL_ALREADY_DECIDED"
    assert len(h.settled) == 1, "a second decision resumes nothing"

    done = await h.execute(run.run_id)
    assert done.state is RunState.SUCCEEDED, done.error
    assert calls.called() == ["build", "ship", "notify"], "approved once, called once, not gated again"
    assert len(await h.tickets(run.run_id)) == 1
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    decided_event = next(e for e in events if e.type is EventType.APPROVAL_DECIDED)
    assert decided_event.data["state"] == "APPROVED" and decided_event.run_state is RunState.PENDING


async def test_ungated_calls_run_without_tickets(store: RunStore, calls: FakeCalls) -> None:
    h = Harness(store, calls, policies())
    run = await h.start(env="staging")
    assert run.state is RunState.SUCCEEDED
    assert await h.tickets(run.run_id) == []


async def test_a_rejection_fails_the_step_with_permission_denied(store: RunStore, calls: FakeCalls) -> None:
    h = Harness(store, calls, policies())
    run = await h.start()
    [ticket] = await h.tickets(run.run_id)
    await h.book.decide(
        "acme", "admin", "ada", f"approvals/{ticket['approval_id']}", False, "not on a friday"
    )
    done = await h.execute(run.run_id)
    assert done.state is RunState.FAILED
    ship = next(s for s in done.steps if s.step_id == "ship")
    assert ship.state is StepState.FAILED and ship.error is not None
    assert ship.error["code"] == "PERMISSION_DENIED" and ship.error["reason"] == "APPROVAL_REJECTED"
    assert "not on a friday" in ship.error["message"]
    assert "ship" not in calls.called()


@pytest.mark.parametrize(("on_expiry", "final"), [("fail", RunState.FAILED), ("approve", RunState.SUCCEEDED)])
async def test_expiry_applies_the_rule_once(
    store: RunStore, calls: FakeCalls, on_expiry: str, final: RunState
) -> None:
    h = Harness(store, calls, policies(ttl=0.01, on_expiry=on_expiry))
    run = await h.start()
    [ticket] = await h.tickets(run.run_id)
    name = f"approvals/{ticket['approval_id']}"

    for _ in range(int(SAFETY * 100)):  # the TTL is 10 ms
        if (await h.book.get("acme", name))["state"] == "EXPIRED":
            break
        await asyncio.sleep(0.01)
    with pytest.raises(FailedPrecondition) as late:
        await h.book.decide("acme", "admin", "ada", name, True, "")
    assert late.value.reason == "APPROVAL_EXPIRED"

    assert await h.sweeper.sweep() == 1
    assert await h.sweeper.sweep() == 0, "expired once"
    assert [s.state for s in h.settled] == ["EXPIRED"] and h.settled[0].resumed
    with pytest.raises(FailedPrecondition) as after:
        await h.book.decide("acme", "admin", "ada", name, True, "")
    assert after.value.reason == "APPROVAL_EXPIRED"

    done = await h.execute(run.run_id)
    assert done.state is final
    if final is RunState.FAILED:
        assert done.error is not None and done.error["reason"] == "APPROVAL_EXPIRED"
        assert done.error["code"] == "DEADLINE_EXCEEDED"
        assert "ship" not in calls.called()
    else:
        assert calls.called().count("ship") == 1


async def test_cancelling_a_waiting_run_closes_its_tickets(store: RunStore, calls: FakeCalls) -> None:
    h = Harness(store, calls, policies())
    run = await h.start()
    assert await cancel_waiting(store.db, run, "changed my mind", "ada")
    assert not await cancel_waiting(store.db, run, "twice", "ada")
    done = await h.reload(run.run_id)
    assert done.state is RunState.CANCELLED
    assert states(done) == {
        "build": StepState.SUCCEEDED,
        "ship": StepState.SKIPPED,
        "notify": StepState.SKIPPED,
    }
    [ticket] = await h.tickets(run.run_id)
    assert ticket["state"] == "REJECTED"
    with pytest.raises(FailedPrecondition):
        await h.book.decide("acme", "admin", "ada", f"approvals/{ticket['approval_id']}", True, "")
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    assert events[-1].type is EventType.RUN_CANCELLED


async def test_two_gated_steps_resume_only_when_both_are_decided(store: RunStore, calls: FakeCalls) -> None:
    h = Harness(store, calls, policies())
    plan = plan_of(
        step("one", "tool", tool="deploy", arguments={"env": "prod-eu"}),
        step("two", "tool", tool="deploy", arguments={"env": "prod-us"}),
    )
    run = await create_run(store, plan)
    run = await h.execute(run.run_id)
    assert run.state is RunState.WAITING
    tickets = await h.tickets(run.run_id)
    assert sorted(t["step_id"] for t in tickets) == ["one", "two"]
    first, second = (f"approvals/{t['approval_id']}" for t in tickets)
    await h.book.decide("acme", "admin", "ada", first, True, "")
    assert (await h.reload(run.run_id)).state is RunState.WAITING
    await h.book.decide("acme", "admin", "ada", second, True, "")
    assert (await h.reload(run.run_id)).state is RunState.PENDING
    assert [s.resumed for s in h.settled] == [False, True]
    done = await h.execute(run.run_id)
    assert done.state is RunState.SUCCEEDED
    assert sorted(calls.called()) == ["one", "two"]


async def test_the_ticket_and_the_waiting_run_are_written_together(store: RunStore, calls: FakeCalls) -> None:
    """Without the lease nothing is written; a ticket that cannot be written leaves the run as it was."""
    rules = policies()
    run = await create_run(store, deploy_plan(), run_input={"env": "production"})
    assert await store.claim(run.run_id, OWNER, 600)
    call = GateCall("tool", "test", "ship", tool="deploy", arguments={"env": "production"})
    rule = rules.match(call)
    assert rule is not None
    request = ParkRequest("ship", f"{run.run_id}/ship/1", rule, call, StepState.PENDING)

    assert await park(store, run, "someone-else", run.last_seq, [request]) is None
    assert await tickets_of(store.db, run.run_id) == []

    # The same call twice: the second ticket violates (run, call key) uniqueness, so nothing is written.
    with pytest.raises(IntegrityError):
        await park(store, run, OWNER, run.last_seq, [request, request])
    assert await tickets_of(store.db, run.run_id) == []
    fresh = await store.get(run.run_id)
    assert fresh is not None and fresh.state is RunState.PENDING and fresh.last_seq == run.last_seq
    assert states(fresh)["ship"] is StepState.PENDING
    assert await lease(store.db, run.run_id) != (None, None)

    parked = await park(store, run, OWNER, run.last_seq, [request])
    assert parked is not None and len(parked.tickets) == 1
    fresh = await store.get(run.run_id)
    assert fresh is not None and fresh.state is RunState.WAITING and fresh.last_seq == run.last_seq + 1
    assert await tickets_of(store.db, run.run_id) == [parked.tickets[0]["approval_id"]]


async def tickets_of(db: Database, run_id: str) -> list[str]:
    async with db.connect() as conn:
        rows = (await conn.execute(select(approvals.c.approval_id).where(approvals.c.run_id == run_id))).all()
    return [r.approval_id for r in rows]


async def test_a_rejection_respects_on_error_continue(store: RunStore, calls: FakeCalls) -> None:
    h = Harness(store, calls, policies())
    plan = plan_of(
        step("ship", "tool", tool="deploy", arguments={"env": "prod"}, on_error="continue"),
        step("report", "tool", ("ship",), tool="mail", arguments={"error": "{{ steps.ship.error.reason }}"}),
    )
    run = await h.execute((await create_run(store, plan)).run_id)
    [ticket] = await h.tickets(run.run_id)
    await h.book.decide("acme", "admin", "ada", f"approvals/{ticket['approval_id']}", False, "no")
    done = await h.execute(run.run_id)
    assert done.state is RunState.SUCCEEDED, done.error
    assert states(done) == {"ship": StepState.FAILED, "report": StepState.SUCCEEDED}
    assert calls.called() == ["report"]
    assert calls.params("report")["arguments"] == {"error": "APPROVAL_REJECTED"}


async def test_a_run_whose_cancellation_was_requested_does_not_park(
    store: RunStore, calls: FakeCalls
) -> None:
    """Cancel and park race: a requested cancellation wins (the lease owner then cancels the run)."""
    rules = policies()
    run = await create_run(store, deploy_plan(), run_input={"env": "production"})
    assert await store.claim(run.run_id, OWNER, 600)
    await store.request_cancel(run.run_id, "stop")
    call = GateCall("tool", "test", "ship", tool="deploy", arguments={"env": "production"})
    rule = rules.match(call)
    assert rule is not None
    request = ParkRequest("ship", f"{run.run_id}/ship/1", rule, call, StepState.PENDING)
    assert await park(store, run, OWNER, run.last_seq, [request]) is None
    assert await tickets_of(store.db, run.run_id) == []
    fresh = await store.get(run.run_id)
    assert fresh is not None and fresh.state is RunState.PENDING and fresh.cancel_requested


async def test_an_agents_rejected_tool_call_is_an_answer_and_nothing_is_redone(store: RunStore) -> None:
    """The catalog's agent demo with the publisher's ticker call gated: the step parks mid-loop, resumes the
    same attempt from its journal (no model turn or tool call repeated) and the model reads the rejection."""
    calls = AgentFakeCalls()
    rules = PolicySet(
        tuple(parse_policy("rules: [{id: r, match: {agents: [publisher], tools: [ticker]}}]", "p.yaml", "p"))
    )
    h = Harness(store, calls, rules)
    run = await create_run(store, demo_plan(), run_input={"text": "tides turn twice a day"})
    run = await h.execute(run.run_id)
    assert run.state is RunState.WAITING
    assert states(run) == {run.steps[0].step_id: StepState.WAITING}
    [ticket] = await h.tickets(run.run_id)
    assert ticket["request"]["agent"] == "publisher" and ticket["request"]["tool"] == "ticker"
    assert ticket["call_key"].startswith(f"{run.run_id}/{run.steps[0].step_id}/1/")
    before = (list(calls.model_keys), list(calls.side_effects))
    assert not any("ticker" in key for key in calls.executions), "the gated call did not run"

    await h.book.decide("acme", "admin", "ada", f"approvals/{ticket['approval_id']}", False, "not now")
    assert (await h.reload(run.run_id)).steps[0].state is StepState.RUNNING, "resumes its attempt"
    done = await h.execute(run.run_id)
    assert done.state is RunState.SUCCEEDED, done.error
    assert calls.model_keys[: len(before[0])] == before[0]
    assert len(set(calls.model_keys)) == len(calls.model_keys), "no model turn repeated"
    assert calls.side_effects == before[1], "word-count ran once, before the wait; the ticker never"
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    starts = [e.data for e in events if e.type is EventType.STEP_STARTED]
    assert starts == [{"attempt": 1}, {"attempt": 1, "resumed": True}]
    ticker = next(
        e.data
        for e in events
        if e.type is EventType.AGENT_TURN and e.data.get("call", {}).get("name") == "ticker"
    )
    assert ticker["error"] is True and "was rejected by ada: not now" in ticker["result"]


async def test_a_model_step_over_the_cost_threshold_waits(store: RunStore, calls: FakeCalls) -> None:
    rules = PolicySet(tuple(parse_policy("rules: [{id: dear, match: {min_cost_usd: 1}}]", "p.yaml", "p")))
    h = Harness(store, calls, rules)
    plan = plan_of(step("cheap", "model", prompt="hi"), step("dear", "model", prompt="essay"))
    plan = replace(plan, cost_estimate={"cost_usd": 2.5, "steps": {"cheap": 0.5, "dear": 2.0}})
    run = await h.execute((await create_run(store, plan)).run_id)
    assert run.state is RunState.WAITING
    assert calls.called() == ["cheap"]
    [ticket] = await h.tickets(run.run_id)
    assert ticket["step_id"] == "dear" and ticket["request"]["estimated_cost_usd"] == 2.0
    assert ticket["request"]["kind"] == "model" and ticket["request"]["arguments"] == {"prompt": "essay"}


async def test_concurrent_decisions_resume_the_run_once(store: RunStore, calls: FakeCalls) -> None:
    """Two people approve at the same moment (and a sweeper with them): one decision wins, one resume."""
    h = Harness(store, calls, policies())
    run = await h.start()
    [ticket] = await h.tickets(run.run_id)
    name = f"approvals/{ticket['approval_id']}"
    other = Approvals(store.db)
    outcomes = await asyncio.gather(
        h.book.decide("acme", "admin", "ada", name, True, "first"),
        other.decide("acme", "admin", "bob", name, False, "second"),
        h.sweeper.sweep(),
        return_exceptions=True,
    )
    decided = [o for o in outcomes[:2] if isinstance(o, dict)]
    refused = [o for o in outcomes[:2] if isinstance(o, FailedPrecondition)]
    assert len(decided) == 1 and len(refused) == 1, outcomes
    assert refused[0].reason == "APPROVAL_ALREADY_DECIDED"
    assert outcomes[2] == 0, "nothing was due"
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    assert [e.type for e in events].count(EventType.APPROVAL_DECIDED) == 1
    assert (await h.reload(run.run_id)).state is RunState.PENDING
