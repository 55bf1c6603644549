"""RunEngine over a real store and a scripted StepCalls: DAG walk, journal, resume, failure, lease loss."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from agentflow_runtime.protojson import utcnow
from agentflow_worker.engine import LeaseLost, RunEngine
from agentflow_worker.inputs import input_digest
from agentflow_worker.model import Event, EventType, Plan, RunRecord, RunState, StepState
from agentflow_worker.store import RunStore
from agentflow_worker.tables import runs
from sqlalchemy import select, update

from .conftest import (
    SAFETY,
    FakeCalls,
    Notes,
    all_events,
    assert_contiguous,
    create_run,
    diamond,
    new_run,
    plan_of,
    step,
    step_states,
    types,
)

OWNER = "w1"


async def claimed(store: RunStore, plan: Plan, run_input: dict[str, Any] | None = None) -> RunRecord:
    run = await create_run(store, plan, run_input=run_input)
    assert await store.claim(run.run_id, OWNER, 600)
    fresh = await store.get(run.run_id)
    assert fresh is not None
    return fresh


async def execute(store: RunStore, calls: FakeCalls, run: RunRecord, notes: Notes | None = None) -> RunState:
    engine = RunEngine(store, calls, OWNER, notes or Notes())
    return await asyncio.wait_for(engine.execute(run), SAFETY)


async def lease_owner(store: RunStore, run_id: str) -> str | None:
    async with store.db.connect() as conn:
        owner = await conn.scalar(select(runs.c.lease_owner).where(runs.c.run_id == run_id))
    return None if owner is None else str(owner)


async def hold_lease(store: RunStore, run_id: str, state: RunState | None = None) -> None:
    """Give OWNER the lease again (a finished run's final transition released it), optionally with the
    run state a crash would have left."""
    values: dict[str, Any] = {"lease_owner": OWNER, "lease_expires": utcnow() + timedelta(seconds=600)}
    if state is not None:
        values["state"] = state.value
    async with store.db.begin() as conn:
        await conn.execute(update(runs).where(runs.c.run_id == run_id).values(**values))


async def reload(store: RunStore, run_id: str) -> RunRecord:
    run = await store.get(run_id)
    assert run is not None
    return run


async def test_dag_runs_siblings_concurrently_and_journals_every_result(
    store: RunStore, calls: FakeCalls
) -> None:
    calls.script("a", output={"text": "moon"}, tokens=(3, 4))
    # b and c each wait for the other's call to have started: this only finishes if they overlap.
    calls.script("b", output={"text": "B"}, rendezvous=("c",), tokens=(10, 20))
    calls.script("c", output={"text": "C"}, rendezvous=("b",))
    calls.script("d", output={"text": "done"})
    run = await claimed(store, diamond())
    notes = Notes()

    assert await execute(store, calls, run, notes) is RunState.SUCCEEDED

    assert calls.called()[0] == "a"
    assert sorted(calls.called()[1:3]) == ["b", "c"]
    assert calls.called()[3] == "d"
    # Templates carried outputs forward, keeping types for whole-value expressions.
    assert calls.params("a") == {"topic": "tides"}
    assert calls.params("b") == {"prompt": "summarize moon"}
    assert calls.params("c") == {"text": "MOON"}
    assert calls.params("d") == {"parts": ["B", "C"]}

    stored = await reload(store, run.run_id)
    assert stored.state is RunState.SUCCEEDED
    assert stored.output == {"result": "done", "b": {"text": "B"}}
    assert stored.error is None
    assert stored.end_time is not None
    assert (stored.input_tokens, stored.output_tokens) == (13, 24)
    assert {s.step_id: (s.state, s.output, s.attempts) for s in stored.steps} == {
        "a": (StepState.SUCCEEDED, {"text": "moon"}, 1),
        "b": (StepState.SUCCEEDED, {"text": "B"}, 1),
        "c": (StepState.SUCCEEDED, {"text": "C"}, 1),
        "d": (StepState.SUCCEEDED, {"text": "done"}, 1),
    }
    assert all(s.start_time is not None and s.end_time is not None for s in stored.steps)

    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    assert stored.last_seq == len(events)
    assert events[0].type is EventType.RUN_CREATED
    assert events[1].type is EventType.RUN_STARTED
    assert events[-1].type is EventType.RUN_SUCCEEDED
    assert events[-1].run_state is RunState.SUCCEEDED
    assert events[-1].data == {"output": {"result": "done", "b": {"text": "B"}}}
    assert all(e.run_state is RunState.RUNNING for e in events[1:-1])
    for sid in "abcd":
        assert types(events).count((EventType.STEP_STARTED, sid)) == 1
        assert types(events).count((EventType.STEP_SUCCEEDED, sid)) == 1
    # A step starts only after everything it needs has succeeded.
    position = {t: i for i, t in enumerate(types(events))}
    assert position[(EventType.STEP_SUCCEEDED, "a")] < position[(EventType.STEP_STARTED, "b")]
    assert position[(EventType.STEP_SUCCEEDED, "a")] < position[(EventType.STEP_STARTED, "c")]
    assert position[(EventType.STEP_SUCCEEDED, "b")] < position[(EventType.STEP_STARTED, "d")]
    assert position[(EventType.STEP_SUCCEEDED, "c")] < position[(EventType.STEP_STARTED, "d")]
    succeeded_b = next(e for e in events if (e.type, e.step_id) == (EventType.STEP_SUCCEEDED, "b"))
    assert succeeded_b.data == {
        "output": {"text": "B"},
        "attempt": 1,
        "input_digest": input_digest(calls.params("b")),  # what the step was given, for replay
        "fake": True,
    }
    started_a = next(e for e in events if (e.type, e.step_id) == (EventType.STEP_STARTED, "a"))
    assert started_a.data == {"attempt": 1}
    # Every event the engine wrote was published to watchers once, in order, after its commit.
    assert notes.runs == [run.run_id] * (len(events) - 1)
    assert notes.seqs == [e.seq for e in events[1:]]


async def test_emitted_output_events_are_journaled_in_order(store: RunStore, calls: FakeCalls) -> None:
    calls.script(
        "a",
        emits=[
            (EventType.TOOL_OUTPUT, {"stream": "stdout", "text": "one"}),
            (EventType.TOOL_OUTPUT, {"stream": "stderr", "text": "two"}),
        ],
    )
    run = await claimed(store, plan_of(step("a")))
    assert await execute(store, calls, run) is RunState.SUCCEEDED
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    assert types(events) == [
        (EventType.RUN_CREATED, ""),
        (EventType.RUN_STARTED, ""),
        (EventType.STEP_STARTED, "a"),
        (EventType.TOOL_OUTPUT, "a"),
        (EventType.TOOL_OUTPUT, "a"),
        (EventType.STEP_SUCCEEDED, "a"),
        (EventType.RUN_SUCCEEDED, ""),
    ]
    assert [e.data["text"] for e in events if e.type is EventType.TOOL_OUTPUT] == ["one", "two"]
    # Without an output template the run's output is every step's output by id.
    assert (await reload(store, run.run_id)).output == {"a": {"text": "a-out"}}


async def test_resume_never_recomputes_a_journaled_step(store: RunStore, calls: FakeCalls) -> None:
    run = await claimed(store, diamond())
    first = FakeCalls()
    first.script("a", output={"text": "from-journal"})
    first.script("b", gate=asyncio.Event())  # never released: the first worker "crashes" here
    first.script("c", gate=asyncio.Event())
    engine = RunEngine(store, first, OWNER, Notes())
    task = asyncio.create_task(engine.execute(run))
    await first.wait_started("b")
    await first.wait_started("c")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, SAFETY)
    journaled = await reload(store, run.run_id)
    assert journaled.state is RunState.RUNNING
    assert step_states(journaled) == {
        "a": StepState.SUCCEEDED,
        "b": StepState.RUNNING,
        "c": StepState.RUNNING,
        "d": StepState.PENDING,
    }
    assert sorted(first.cancelled) == ["b", "c"]

    # A fresh engine (same owner here; the lease is still held) picks up from the journal.
    assert await execute(store, calls, journaled) is RunState.SUCCEEDED
    assert "a" not in calls.called()
    assert sorted(calls.called()) == ["b", "c", "d"]
    assert calls.params("b") == {"prompt": "summarize from-journal"}
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    assert types(events).count((EventType.RUN_STARTED, "")) == 1
    assert types(events).count((EventType.STEP_STARTED, "a")) == 1
    starts_b = [e.data for e in events if (e.type, e.step_id) == (EventType.STEP_STARTED, "b")]
    # The interrupted attempt is resumed, not counted again: same attempt, same idempotency key.
    assert starts_b == [{"attempt": 1}, {"attempt": 1, "resumed": True}]
    assert ("b", 1) in calls.attempts and ("d", 1) in calls.attempts
    assert {s.step_id: s.attempts for s in (await reload(store, run.run_id)).steps}["b"] == 1
    assert events[-1].type is EventType.RUN_SUCCEEDED


async def test_resume_of_a_fully_journaled_run_makes_no_calls(store: RunStore, calls: FakeCalls) -> None:
    run = await claimed(store, diamond())
    assert await execute(store, FakeCalls(), run) is RunState.SUCCEEDED
    done = await reload(store, run.run_id)
    # The final transition gave the lease up in the same transaction.
    assert await lease_owner(store, run.run_id) is None
    # Pretend the worker crashed just before RUN_SUCCEEDED: the journal has every result.
    await hold_lease(store, run.run_id, RunState.RUNNING)
    events_before = await all_events(store, run.run_id)
    done = await reload(store, run.run_id)
    assert await execute(store, calls, done) is RunState.SUCCEEDED
    assert calls.calls == []
    events = await all_events(store, run.run_id)
    assert events[: len(events_before)] == events_before
    assert types(events[len(events_before) :]) == [(EventType.RUN_SUCCEEDED, "")]


async def test_failed_step_fails_the_run_and_skips_downstream(store: RunStore, calls: FakeCalls) -> None:
    error = {
        "code": "FAILED_PRECONDITION",
        "message": "tool exited 2",
        "reason": "TOOL_FAILED",
        "metadata": {},
    }
    calls.script("b", fail=error)
    run = await claimed(store, diamond())

    assert await execute(store, calls, run) is RunState.FAILED

    assert "d" not in calls.called()
    stored = await reload(store, run.run_id)
    assert stored.state is RunState.FAILED
    assert stored.error == error
    assert stored.output is None
    states = step_states(stored)
    assert states["a"] is StepState.SUCCEEDED
    assert states["b"] is StepState.FAILED
    assert states["d"] is StepState.SKIPPED
    # c was in flight or not yet started when b failed: either journaled or skipped, never left running.
    assert states["c"] in (StepState.SUCCEEDED, StepState.SKIPPED)
    assert next(s for s in stored.steps if s.step_id == "b").error == error

    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    failed = [e for e in events if e.type is EventType.STEP_FAILED]
    assert [(e.step_id, e.data) for e in failed] == [
        ("b", {"error": error, "attempt": 1, "will_retry": False})
    ]
    assert (EventType.STEP_STARTED, "d") not in types(events)
    assert events[-1].type is EventType.RUN_FAILED
    assert events[-1].run_state is RunState.FAILED
    assert events[-1].data == {"error": error}

    # Resuming a failed journal finishes it as failed again without calling anything.
    await hold_lease(store, run.run_id)
    assert await execute(store, FakeCalls(), await reload(store, run.run_id)) is RunState.FAILED


async def test_sibling_in_flight_when_a_step_fails_is_journaled(store: RunStore, calls: FakeCalls) -> None:
    gate = asyncio.Event()
    calls.script(
        "b", fail={"code": "ABORTED", "message": "no", "reason": "X", "metadata": {}}, rendezvous=("c",)
    )
    calls.script("c", gate=gate, rendezvous=("b",))
    run = await claimed(store, diamond())
    task = asyncio.create_task(execute(store, calls, run))
    await calls.wait_started("c")
    gate.set()
    assert await asyncio.wait_for(task, SAFETY) is RunState.FAILED
    states = step_states(await reload(store, run.run_id))
    assert states == {
        "a": StepState.SUCCEEDED,
        "b": StepState.FAILED,
        "c": StepState.SUCCEEDED,
        "d": StepState.SKIPPED,
    }
    assert "d" not in calls.called()


async def test_template_error_in_params_fails_the_step(store: RunStore, calls: FakeCalls) -> None:
    plan = plan_of(
        step("a"),
        step("b", needs=("a",), value="{{ steps.a.output.missing }}"),
        step("c", needs=("b",)),
    )
    run = await claimed(store, plan)
    assert await execute(store, calls, run) is RunState.FAILED
    assert calls.called() == ["a"]
    stored = await reload(store, run.run_id)
    assert stored.error is not None
    assert stored.error["reason"] == "TEMPLATE_ERROR"
    assert stored.error["code"] == "INVALID_ARGUMENT"
    b = next(s for s in stored.steps if s.step_id == "b")
    assert b.state is StepState.FAILED
    assert b.error == stored.error
    assert next(s for s in stored.steps if s.step_id == "c").state is StepState.SKIPPED
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    assert (EventType.STEP_FAILED, "b") in types(events)
    assert events[-1].type is EventType.RUN_FAILED


async def test_output_template_error_fails_the_run(store: RunStore, calls: FakeCalls) -> None:
    run = await claimed(store, plan_of(step("a"), output="{{ steps.nope.output }}"))
    assert await execute(store, calls, run) is RunState.FAILED
    stored = await reload(store, run.run_id)
    assert stored.error is not None and stored.error["reason"] == "OUTPUT_TEMPLATE"
    assert stored.steps[0].state is StepState.SUCCEEDED


async def test_unknown_step_kind_fails_without_a_call(store: RunStore, calls: FakeCalls) -> None:
    run = await claimed(store, plan_of(step("a", "agent")))
    assert await execute(store, calls, run) is RunState.FAILED
    assert calls.calls == []
    stored = await reload(store, run.run_id)
    assert stored.error is not None and stored.error["reason"] == "STEP_KIND"


async def test_plan_with_unreachable_steps_fails(store: RunStore, calls: FakeCalls) -> None:
    run = await claimed(store, plan_of(step("a"), step("b", needs=("ghost",))))
    assert await execute(store, calls, run) is RunState.FAILED
    stored = await reload(store, run.run_id)
    assert stored.error is not None and stored.error["reason"] == "PLAN_STUCK"
    assert step_states(stored) == {"a": StepState.SUCCEEDED, "b": StepState.SKIPPED}


async def test_lease_lost_mid_step_raises_and_writes_nothing_more(store: RunStore, calls: FakeCalls) -> None:
    gate = asyncio.Event()
    calls.script("a", gate=gate)
    run = await claimed(store, diamond())
    engine = RunEngine(store, calls, OWNER, Notes())
    task = asyncio.create_task(engine.execute(run))
    await calls.wait_started("a")

    # The lease runs out and another worker takes the run while `a` is blocked.
    assert await store.renew(run.run_id, OWNER, -1) == (True, False)
    assert await store.claim(run.run_id, "w2", 600)
    before = await all_events(store, run.run_id)
    gate.set()

    with pytest.raises(LeaseLost):
        await asyncio.wait_for(task, SAFETY)
    assert await all_events(store, run.run_id) == before
    stored = await reload(store, run.run_id)
    assert stored.state is RunState.RUNNING
    assert stored.last_seq == before[-1].seq
    assert step_states(stored) == {
        "a": StepState.RUNNING,
        "b": StepState.PENDING,
        "c": StepState.PENDING,
        "d": StepState.PENDING,
    }
    assert calls.called() == ["a"]


async def test_lease_lost_cancels_sibling_calls_in_flight(store: RunStore, calls: FakeCalls) -> None:
    gate = asyncio.Event()
    calls.script("a", gate=gate, rendezvous=("b",))
    calls.script("b", gate=asyncio.Event())  # blocks until cancelled
    run = await claimed(store, plan_of(step("a"), step("b")))
    task = asyncio.create_task(RunEngine(store, calls, OWNER, Notes()).execute(run))
    await calls.wait_started("a")
    await calls.wait_started("b")
    assert await store.renew(run.run_id, OWNER, -1) == (True, False)
    assert await store.claim(run.run_id, "w2", 600)
    gate.set()
    try:
        with pytest.raises(LeaseLost):
            await asyncio.wait_for(task, SAFETY)
        assert calls.cancelled == ["b"]
    finally:
        calls.abandon()


async def test_a_crashing_step_fails_the_run_instead_of_looping(store: RunStore, calls: FakeCalls) -> None:
    """A bug in a step call (a KeyError) is journaled as STEP_CRASHED: the run ends, nothing retries it."""
    plan = plan_of(step("a"), step("b", needs=("a",)), step("c", needs=("b",)))
    calls.script("b", crash=KeyError("role"))
    run = await claimed(store, plan)
    assert await execute(store, calls, run) is RunState.FAILED
    assert calls.called() == ["a", "b"]
    stored = await reload(store, run.run_id)
    assert stored.error is not None and stored.error["reason"] == "STEP_CRASHED"
    assert step_states(stored)["b"] is StepState.FAILED
    # The failure is final: a fresh engine over the same journal does not call anything again.
    await hold_lease(store, run.run_id)
    assert await execute(store, calls, stored) is RunState.FAILED
    assert calls.called() == ["a", "b"]


# -- attempts, retries, timeouts --------------------------------------------------------------

UNAVAILABLE = {
    "code": "UNAVAILABLE",
    "message": "sandbox restarting",
    "reason": "UNAVAILABLE",
    "metadata": {},
}
TOOL_FAILED = {"code": "FAILED_PRECONDITION", "message": "exit 1", "reason": "TOOL_FAILED", "metadata": {}}


class Sleeps:
    """An injected sleep: records each backoff, waits for none (or blocks forever when told to)."""

    def __init__(self, block: bool = False) -> None:
        self.waits: list[float] = []
        self.block = block

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.block:
            await asyncio.Event().wait()


def retrying(step_id: str = "a", **retry: Any) -> Plan:
    return plan_of(step(step_id, "tool", retry=retry))


async def run_with(store: RunStore, calls: FakeCalls, run: RunRecord, sleeps: Sleeps) -> RunState:
    engine = RunEngine(store, calls, OWNER, Notes(), sleep=sleeps, rand=lambda: 0.5)
    return await asyncio.wait_for(engine.execute(run), SAFETY)


async def test_a_retryable_failure_is_retried_with_backoff_and_jitter_under_new_keys(
    store: RunStore, calls: FakeCalls
) -> None:
    calls.script("a", fail=UNAVAILABLE, fail_times=2, output={"text": "third time"})
    plan = retrying(max_attempts=4, initial_backoff_seconds=1.0, multiplier=3.0, jitter=0.5)
    run = await claimed(store, plan)
    sleeps = Sleeps()

    assert await run_with(store, calls, run, sleeps) is RunState.SUCCEEDED

    # Each attempt is a new, journaled attempt number (so a new idempotency key at the callee).
    assert calls.attempts == [("a", 1), ("a", 2), ("a", 3)]
    # base * multiplier**(n-1), less jitter * rand (0.5 * 0.5 = 25 %).
    assert sleeps.waits == [0.75, 2.25]
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    journal = [(e.type, e.data.get("attempt"), e.data.get("will_retry")) for e in events if e.step_id == "a"]
    assert journal == [
        (EventType.STEP_STARTED, 1, None),
        (EventType.STEP_FAILED, 1, True),
        (EventType.STEP_STARTED, 2, None),
        (EventType.STEP_FAILED, 2, True),
        (EventType.STEP_STARTED, 3, None),
        (EventType.STEP_SUCCEEDED, 3, None),
    ]
    stored = await reload(store, run.run_id)
    record = stored.steps[0]
    assert (record.state, record.attempts, record.error) == (StepState.SUCCEEDED, 3, None)


async def test_retries_stop_at_max_attempts_and_the_step_fails(store: RunStore, calls: FakeCalls) -> None:
    calls.script("a", fail=UNAVAILABLE)
    run = await claimed(store, retrying(max_attempts=3, initial_backoff_seconds=10, max_backoff_seconds=15))
    sleeps = Sleeps()
    assert await run_with(store, calls, run, sleeps) is RunState.FAILED
    assert [a for _, a in calls.attempts] == [1, 2, 3]
    assert sleeps.waits == [9.0, 13.5]  # 10 then min(20, 15), each less 10 % (default jitter 0.2 * 0.5)
    failed = [e.data for e in await all_events(store, run.run_id) if e.type is EventType.STEP_FAILED]
    assert [(d["attempt"], d["will_retry"]) for d in failed] == [(1, True), (2, True), (3, False)]
    stored = await reload(store, run.run_id)
    assert stored.steps[0].state is StepState.FAILED and stored.error == UNAVAILABLE


async def test_only_codes_in_retry_on_are_retried(store: RunStore, calls: FakeCalls) -> None:
    calls.script("a", fail=TOOL_FAILED)
    run = await claimed(store, retrying(max_attempts=5))
    assert await run_with(store, calls, run, Sleeps()) is RunState.FAILED
    assert calls.attempts == [("a", 1)], "FAILED_PRECONDITION is not retried by default"

    again = FakeCalls()
    again.script("a", fail=TOOL_FAILED, fail_times=1)
    run = await claimed(store, retrying(max_attempts=5, retry_on=["FAILED_PRECONDITION"]))
    assert await run_with(store, again, run, Sleeps()) is RunState.SUCCEEDED
    assert again.attempts == [("a", 1), ("a", 2)]


async def test_no_retry_policy_means_one_attempt(store: RunStore, calls: FakeCalls) -> None:
    calls.script("a", fail=UNAVAILABLE)
    run = await claimed(store, plan_of(step("a")))
    sleeps = Sleeps()
    assert await run_with(store, calls, run, sleeps) is RunState.FAILED
    assert calls.attempts == [("a", 1)] and sleeps.waits == []


async def test_a_timed_out_attempt_is_stopped_at_the_callee_and_retried_as_deadline_exceeded(
    store: RunStore, calls: FakeCalls
) -> None:
    calls.script("a", gate=asyncio.Event())  # never answers
    plan = plan_of(step("a", "tool", timeout_seconds=0.2, retry={"max_attempts": 2}))
    run = await claimed(store, plan)
    assert await run_with(store, calls, run, Sleeps()) is RunState.FAILED
    assert calls.attempts == [("a", 1), ("a", 2)]
    assert calls.cancelled == ["a", "a"]
    # The local call is cancelled, and the callee is told to stop that attempt's execution.
    assert calls.stopped == [("a", "tool", 1), ("a", "tool", 2)]
    stored = await reload(store, run.run_id)
    assert stored.error is not None
    assert (stored.error["code"], stored.error["reason"]) == ("DEADLINE_EXCEEDED", "STEP_TIMEOUT")


async def test_resuming_a_step_in_backoff_starts_the_next_attempt(store: RunStore, calls: FakeCalls) -> None:
    first = FakeCalls()
    first.script("a", fail=UNAVAILABLE)
    run = await claimed(store, retrying(max_attempts=3, initial_backoff_seconds=3600))
    engine = RunEngine(store, first, OWNER, Notes(), sleep=Sleeps(block=True))
    task = asyncio.create_task(engine.execute(run))
    for _ in range(int(SAFETY / 0.01)):
        if (await reload(store, run.run_id)).steps[0].error is not None:
            break
        await asyncio.sleep(0.01)
    task.cancel()  # the worker "crashes" during the hour-long backoff
    with pytest.raises(asyncio.CancelledError):
        await task
    waiting = await reload(store, run.run_id)
    assert (waiting.steps[0].state, waiting.steps[0].attempts) == (StepState.PENDING, 1)

    assert await run_with(store, calls, waiting, Sleeps()) is RunState.SUCCEEDED
    assert calls.attempts == [("a", 2)], "the failed attempt 1 is not resumed; attempt 2 runs at once"


async def test_a_crash_mid_call_resumes_the_same_attempt_even_after_retries(
    store: RunStore, calls: FakeCalls
) -> None:
    first = FakeCalls()
    first.script("a", fail=UNAVAILABLE, fail_times=1, gate=asyncio.Event())
    first.scripts["a"].gate.set()  # type: ignore[union-attr]
    run = await claimed(store, retrying(max_attempts=3))
    gate = asyncio.Event()
    engine = RunEngine(store, first, OWNER, Notes(), sleep=Sleeps())

    async def block_second() -> None:
        await first.wait_started("a")
        first.scripts["a"].gate = gate  # attempt 2 hangs: the worker is killed during it

    blocker = asyncio.create_task(block_second())
    task = asyncio.create_task(engine.execute(run))
    await blocker
    for _ in range(int(SAFETY / 0.01)):
        if ("a", 2) in first.attempts:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    crashed = await reload(store, run.run_id)
    assert (crashed.steps[0].state, crashed.steps[0].attempts) == (StepState.RUNNING, 2)

    assert await run_with(store, calls, crashed, Sleeps()) is RunState.SUCCEEDED
    assert calls.attempts == [("a", 2)], "same attempt, same key: the callee replays or attaches"


async def test_cancel_stops_steps_a_crashed_worker_left_running(store: RunStore, calls: FakeCalls) -> None:
    first = FakeCalls()
    first.script("a", gate=asyncio.Event())
    run = await claimed(store, plan_of(step("a", "tool", tool="slow"), step("b", needs=("a",))))
    task = asyncio.create_task(RunEngine(store, first, OWNER, Notes()).execute(run))
    await first.wait_started("a")
    task.cancel()  # the worker dies mid-call; its tool keeps running at the sandbox
    with pytest.raises(asyncio.CancelledError):
        await task

    orphaned = await reload(store, run.run_id)
    engine = RunEngine(store, calls, OWNER, Notes())
    assert await asyncio.wait_for(engine.cancel(orphaned, "stop it"), SAFETY) is RunState.CANCELLED
    assert calls.stopped == [("a", "tool", 1)]
    assert calls.calls == []
    stored = await reload(store, run.run_id)
    assert step_states(stored) == {"a": StepState.SKIPPED, "b": StepState.SKIPPED}


async def test_a_spent_budget_stops_the_run_cleanly(store: RunStore, calls: FakeCalls) -> None:
    """Three 10-token model steps under a 15-token cap: the second spends it, the third never starts."""
    plan = plan_of(step("a", "model"), step("b", "model", ("a",)), step("c", "model", ("b",)))
    for step_id in ("a", "b", "c"):
        calls.script(step_id, tokens=(4, 6))
    run = new_run(plan)
    run.budget = {"max_cost_usd": 0.0, "max_tokens": 15}
    created, _ = await store.create(run, None)
    assert await store.claim(created.run_id, OWNER, 600)
    fresh = await reload(store, created.run_id)
    assert await execute(store, calls, fresh) is RunState.FAILED
    assert calls.called() == ["a", "b"]
    stored = await reload(store, created.run_id)
    assert stored.error is not None
    assert stored.error["code"] == "RESOURCE_EXHAUSTED"
    assert stored.error["reason"] == "BUDGET_EXHAUSTED"
    assert stored.error["metadata"]["spent_tokens"] == "20"
    states = step_states(stored)
    assert states == {"a": StepState.SUCCEEDED, "b": StepState.SUCCEEDED, "c": StepState.SKIPPED}
    assert stored.input_tokens + stored.output_tokens == 20


async def test_a_budget_is_counted_from_the_journal_on_resume(store: RunStore, calls: FakeCalls) -> None:
    """A resumed run keeps what it spent before the crash: the budget is not reset by a new worker."""
    plan = plan_of(step("a", "model"), step("b", "model", ("a",)), step("c", "model", ("b",)))
    for step_id in ("a", "b", "c"):
        calls.script(step_id, tokens=(4, 6))
    run = new_run(plan)
    run.budget = {"max_cost_usd": 0.0, "max_tokens": 25}
    created, _ = await store.create(run, None)
    assert await store.claim(created.run_id, OWNER, 600)
    # A first worker journals `a` and `b` (20 tokens) and dies.
    first = FakeCalls()
    for step_id in ("a", "b"):
        first.script(step_id, tokens=(4, 6))
    first.script("c", gate=asyncio.Event())
    task = asyncio.create_task(execute(store, first, await reload(store, created.run_id)))
    await first.wait_started("c")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # The next worker runs `c` (30 tokens in all): spent only after the last step, so the run succeeds.
    assert await execute(store, calls, await reload(store, created.run_id)) is RunState.SUCCEEDED
    assert calls.called() == ["c"]
    assert (await reload(store, created.run_id)).input_tokens == 12


async def test_a_false_condition_skips_the_step_and_what_needs_it(store: RunStore, calls: FakeCalls) -> None:
    plan = plan_of(
        step("a"),
        step("b", needs=("a",), when="{{ steps.a.output.go }}"),
        step("c", needs=("b",)),
        step("d", needs=("a",), when="{{ steps.a.output.label | upper }}"),
        output={"b": "{{ steps.b.output | default('none') }}", "d": "{{ steps.d.output }}"},
    )
    calls.script("a", output={"go": False, "label": "yes"})
    calls.script("d", output="ran")
    run = await claimed(store, plan)
    assert await execute(store, calls, run) is RunState.SUCCEEDED
    assert sorted(calls.called()) == ["a", "d"]
    stored = await reload(store, run.run_id)
    states = step_states(stored)
    assert states == {
        "a": StepState.SUCCEEDED,
        "b": StepState.SKIPPED,
        "c": StepState.SKIPPED,
        "d": StepState.SUCCEEDED,
    }
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    skips = {e.step_id: e.data["reason"] for e in events if e.type is EventType.STEP_SKIPPED}
    assert skips == {"b": "condition is false", "c": "needs skipped step b"}
    assert stored.output == {"b": "none", "d": "ran"}


@pytest.mark.parametrize("value", ["false", "No", "0", "", "null", 0, None, [], {}])
def test_false_values_of_a_condition(value: object) -> None:
    from agentflow_worker.engine import _truthy

    assert _truthy(value) is False


async def test_a_skipped_step_stays_skipped_on_resume(store: RunStore, calls: FakeCalls) -> None:
    plan = plan_of(step("a"), step("b", needs=("a",), when=False), step("c", needs=("a",)))
    gate = asyncio.Event()
    first = FakeCalls()
    first.script("c", gate=gate)
    run = await claimed(store, plan)
    task = asyncio.create_task(execute(store, first, run))
    await first.wait_started("c")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await execute(store, calls, await reload(store, run.run_id)) is RunState.SUCCEEDED
    assert calls.called() == ["c"]
    assert step_states(await reload(store, run.run_id))["b"] is StepState.SKIPPED


# -- the lean step path -------------------------------------------------------------------------


class CountingStore(RunStore):
    """A RunStore that records each transition's event types (one entry per transaction)."""

    def __init__(self, store: RunStore) -> None:
        self.db = store.db
        self.journal = store.journal
        self.transactions: list[list[tuple[EventType, str]]] = []

    async def transition(self, run_id: str, owner: str, new_events: Any, **kwargs: Any) -> bool:
        self.transactions.append([(e.type, e.step_id) for e in new_events])
        return await super().transition(run_id, owner, new_events, **kwargs)


async def test_a_chain_costs_one_transaction_per_step_and_each_call_follows_its_journaled_start(
    store: RunStore,
) -> None:
    """Five chained steps: RUN_STARTED rides with the first STEP_STARTED, each result with the next step's
    start, the last result with RUN_SUCCEEDED (which also releases the lease): 6 transactions, not 12.
    Every call sees its own STEP_STARTED (attempt journaled) and the previous result already committed."""
    plan = plan_of(*(step(f"s{i}", needs=(f"s{i - 1}",) if i > 1 else ()) for i in range(1, 6)))
    committed_at_call: dict[str, list[tuple[EventType, str]]] = {}

    class Checking(FakeCalls):
        async def tool(
            self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Any, *, attempt: int = 1
        ) -> Any:
            committed_at_call[step_id] = types(await all_events(store, run.run_id))
            return await super().tool(run, step_id, params, emit, attempt=attempt)

    counting = CountingStore(store)
    run = await claimed(store, plan)
    engine = RunEngine(counting, Checking(), OWNER, Notes(), lease_seconds=600)
    assert await asyncio.wait_for(engine.execute(run), SAFETY) is RunState.SUCCEEDED

    assert counting.transactions == [
        [(EventType.RUN_STARTED, ""), (EventType.STEP_STARTED, "s1")],
        *([(EventType.STEP_SUCCEEDED, f"s{i - 1}"), (EventType.STEP_STARTED, f"s{i}")] for i in range(2, 6)),
        [(EventType.STEP_SUCCEEDED, "s5"), (EventType.RUN_SUCCEEDED, "")],
    ]
    for i in range(1, 6):
        seen = committed_at_call[f"s{i}"]
        assert seen[-1] == (EventType.STEP_STARTED, f"s{i}")
        if i > 1:
            assert (EventType.STEP_SUCCEEDED, f"s{i - 1}") in seen
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    assert engine.released and await lease_owner(store, run.run_id) is None


class Published(Notes):
    """Notes that lets a test wait for an event to be published (which happens after its commit)."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[EventType, str]] = []
        self.changed = asyncio.Event()

    async def __call__(self, run_id: str, events: Sequence[Event] = ()) -> None:
        await super().__call__(run_id, events)
        self.published += [(e.type, e.step_id) for e in events]
        self.changed.set()

    async def wait_for(self, item: tuple[EventType, str]) -> None:
        while item not in self.published:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), SAFETY)


async def test_a_result_is_journaled_before_the_run_waits_on_a_sibling(
    store: RunStore, calls: FakeCalls
) -> None:
    """a and b run side by side; a's result must not wait in memory for b (nothing else to carry it)."""
    gate = asyncio.Event()
    calls.script("b", gate=gate)
    run = await claimed(store, plan_of(step("a"), step("b")))
    notes = Published()
    task = asyncio.create_task(RunEngine(store, calls, OWNER, notes).execute(run))
    try:
        await notes.wait_for((EventType.STEP_SUCCEEDED, "a"))
        assert (EventType.STEP_SUCCEEDED, "a") in types(await all_events(store, run.run_id))
        assert not task.done() and "b" not in calls.finished
    finally:
        gate.set()
    assert await asyncio.wait_for(task, SAFETY) is RunState.SUCCEEDED


async def test_an_expired_lease_refuses_the_write_even_to_its_owner(
    store: RunStore, calls: FakeCalls
) -> None:
    """The lease is checked in the write itself: owner AND not expired (another worker may claim it)."""
    run = await claimed(store, plan_of(step("a")))
    assert await store.renew(run.run_id, OWNER, -1) == (True, False)  # still ours on paper, but expired
    with pytest.raises(LeaseLost):
        await execute(store, calls, run)
    assert calls.calls == []
    assert types(await all_events(store, run.run_id)) == [(EventType.RUN_CREATED, "")]


async def test_transitions_renew_the_lease(store: RunStore, calls: FakeCalls) -> None:
    run = await claimed(store, plan_of(step("a")))
    await hold_lease(store, run.run_id)  # expires in 600 s
    engine = RunEngine(store, calls, OWNER, Notes(), lease_seconds=3600)
    gate = asyncio.Event()
    calls.script("a", gate=gate)
    task = asyncio.create_task(engine.execute(run))
    await calls.wait_started("a")
    async with store.db.connect() as conn:
        expires = await conn.scalar(select(runs.c.lease_expires).where(runs.c.run_id == run.run_id))
    assert expires is not None and expires > utcnow() + timedelta(seconds=1800)
    gate.set()
    assert await asyncio.wait_for(task, SAFETY) is RunState.SUCCEEDED
