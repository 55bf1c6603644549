"""RunEngine when a step's condition cannot be evaluated, or a journal write fails, while siblings run.

Both must leave a journal a later worker can trust: no step RUNNING in a finished run, no result lost,
and nothing whose result was journaled executed again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agentflow_worker.calls import Emit, StepResult, idempotency_key
from agentflow_worker.engine import JournalWriteFailed, LeaseLost, RunEngine
from agentflow_worker.model import EventType, RunRecord, RunState, StepState
from agentflow_worker.scheduler import Scheduler
from agentflow_worker.store import RunStore

from .conftest import (
    SAFETY,
    FakeCalls,
    Notes,
    all_events,
    assert_contiguous,
    create_run,
    plan_of,
    step,
    step_states,
    types,
)
from .test_engine import OWNER, Published, claimed, execute, reload
from .test_scheduler import Finished

FINAL_STEP_STATES = {StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED}


def _when_error_plan(**c_params: Any) -> Any:
    """s and b start together; when s is done, c's condition compares a string with a number (an error
    only known at run time) while b is still in its call; d needs b and c."""
    return plan_of(
        step("s"),
        step("b"),
        step("c", needs=("s",), when="{{ steps.s.output.n > 3 }}", **c_params),
        step("d", needs=("b", "c"), seen="{{ steps.b.output.text }}"),
    )


async def test_a_condition_error_while_a_sibling_runs_journals_the_sibling(
    store: RunStore, calls: FakeCalls
) -> None:
    gate = asyncio.Event()
    calls.script("s", output={"n": "many"})
    calls.script("b", gate=gate)
    run = await claimed(store, _when_error_plan())
    notes = Published()
    task = asyncio.create_task(RunEngine(store, calls, OWNER, notes).execute(run))
    try:
        await calls.wait_started("b")
        await notes.wait_for((EventType.STEP_FAILED, "c"))  # b is still in its call
        gate.set()
        assert await asyncio.wait_for(task, SAFETY) is RunState.FAILED
    finally:
        calls.abandon()

    stored = await reload(store, run.run_id)
    assert stored.error is not None and stored.error["reason"] == "TEMPLATE_ERROR"
    assert step_states(stored) == {
        "s": StepState.SUCCEEDED,
        "b": StepState.SUCCEEDED,  # finished and journaled, not abandoned mid-call
        "c": StepState.FAILED,
        "d": StepState.SKIPPED,
    }
    assert next(s for s in stored.steps if s.step_id == "b").output == {"text": "b-out"}
    assert calls.cancelled == []
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    assert types(events).index((EventType.STEP_SUCCEEDED, "b")) < len(events) - 1
    assert events[-1].type is EventType.RUN_FAILED
    assert "d" not in calls.called()


async def test_a_condition_error_honours_on_error_continue(store: RunStore, calls: FakeCalls) -> None:
    calls.script("s", output={"n": "many"})
    run = await claimed(store, _when_error_plan(on_error="continue"))
    assert await execute(store, calls, run) is RunState.SUCCEEDED
    stored = await reload(store, run.run_id)
    states = step_states(stored)
    assert states == {
        "s": StepState.SUCCEEDED,
        "b": StepState.SUCCEEDED,
        "c": StepState.FAILED,
        "d": StepState.SUCCEEDED,
    }
    c = next(s for s in stored.steps if s.step_id == "c")
    assert c.error is not None and c.error["reason"] == "TEMPLATE_ERROR"
    assert calls.params("d") == {"seen": "b-out"}
    assert_contiguous(await all_events(store, run.run_id))


class LosingStore(RunStore):
    """The real store, except that the lease is lost (as if another worker took it) at the first
    transition that skips `step_id`."""

    def __init__(self, store: RunStore, step_id: str) -> None:
        self.db = store.db
        self.journal = store.journal
        self.step_id = step_id
        self.lost = False

    async def transition(self, run_id: str, owner: str, new_events: Any, **kwargs: Any) -> bool:
        if (EventType.STEP_SKIPPED, self.step_id) in types(list(new_events)):
            self.lost = True
        if self.lost:
            return False
        return await super().transition(run_id, owner, new_events, **kwargs)


async def test_a_lease_lost_while_skipping_a_step_cancels_the_sibling_calls(
    store: RunStore, calls: FakeCalls
) -> None:
    plan = plan_of(step("s"), step("b"), step("c", needs=("s",), when=False))
    calls.script("b", gate=asyncio.Event())  # blocks until cancelled
    run = await claimed(store, plan)
    engine = RunEngine(LosingStore(store, "c"), calls, OWNER, Notes())
    try:
        with pytest.raises(LeaseLost):
            await asyncio.wait_for(engine.execute(run), SAFETY)
        assert calls.cancelled == ["b"]  # no call outlives the walk
    finally:
        calls.abandon()


# -- a journal write that fails -----------------------------------------------------------------


class FailingStore(RunStore):
    """The real store, whose transition raises once (a connection reset, a busy database) for the
    first batch holding `event`; every batch written or attempted is recorded."""

    def __init__(self, store: RunStore, event: tuple[EventType, str]) -> None:
        self.db = store.db
        self.journal = store.journal
        self.event = event
        self.failed: list[list[tuple[EventType, str]]] = []

    async def transition(self, run_id: str, owner: str, new_events: Any, **kwargs: Any) -> bool:
        batch = types(list(new_events))
        if self.event in batch and not self.failed:
            self.failed.append(batch)
            raise ConnectionResetError("connection reset by peer")
        return await super().transition(run_id, owner, new_events, **kwargs)


class KeyedCalls(FakeCalls):
    """A callee that keeps execution records by idempotency key, like tool-sandbox: the side effect
    happens once per key, a repeated key answers with the recorded result. Step `b` streams one output
    chunk once step `c` has returned its result."""

    def __init__(self) -> None:
        super().__init__()
        self.effects: dict[str, int] = {}
        self.records: dict[str, StepResult] = {}
        self.keys: list[tuple[str, str]] = []
        self.c_returned = asyncio.Event()

    async def tool(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, *, attempt: int = 1
    ) -> StepResult:
        key = idempotency_key(run, step_id, attempt)
        self.keys.append((step_id, key))
        self.calls.append((step_id, "tool", params))
        if key in self.records:
            return self.records[key]
        self.effects[step_id] = self.effects.get(step_id, 0) + 1
        result = StepResult({"text": f"{step_id}-out"}, 0, 0, {})
        self.records[key] = result  # the execution completes at the callee whatever its caller does
        if step_id == "b":
            # Woken by c's `set`, b runs before the walk sees c done and flushes: c's result (buffered as
            # c's task ends) rides in the same batch as this chunk. A plain wait keeps that order
            # (`wait_for` would add a task hop on Python 3.11); the test asserts the batch it got.
            await self.c_returned.wait()
            await emit(EventType.TOOL_OUTPUT, step_id, {"stream": "stdout", "text": "chunk"})
        if step_id == "c":
            self.c_returned.set()
        return result


async def test_after_a_failed_journal_write_the_engine_writes_nothing_more(
    store: RunStore, calls: FakeCalls
) -> None:
    """The first transition (RUN_STARTED with a's STEP_STARTED) fails: the event numbers it took are gone
    with it, so the sibling b's STEP_STARTED must not be written after them (a gap in the journal). The
    engine stops before any call; a fresh engine resumes the run from the journal."""
    run = await claimed(store, plan_of(step("a"), step("b")))
    failing = FailingStore(store, (EventType.STEP_STARTED, "a"))
    with pytest.raises(JournalWriteFailed):
        await asyncio.wait_for(RunEngine(failing, calls, OWNER, Notes()).execute(run), SAFETY)
    assert failing.failed == [[(EventType.RUN_STARTED, ""), (EventType.STEP_STARTED, "a")]]
    assert types(await all_events(store, run.run_id)) == [(EventType.RUN_CREATED, "")]
    assert calls.calls == []

    resumed = await RunEngine(failing, calls, OWNER, Notes()).execute(await reload(store, run.run_id))
    assert resumed is RunState.SUCCEEDED
    assert sorted(calls.called()) == ["a", "b"]
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    assert types(events).count((EventType.RUN_STARTED, "")) == 1


@pytest.fixture
async def scheduler_over(store: RunStore) -> AsyncIterator[list[Scheduler]]:
    made: list[Scheduler] = []
    yield made
    for scheduler in made:
        await asyncio.wait_for(scheduler.stop(), SAFETY)


async def test_a_failed_journal_write_mid_call_is_resumed_from_the_journal_not_failed(
    store: RunStore, scheduler_over: list[Scheduler]
) -> None:
    """b's output chunk is written together with c's buffered result; that write fails once. The run is
    not failed for it: the worker lets the run go, takes it up again from the journal, and resumes b and c
    under their journaled attempts (the callee answers from its record), so every side effect happens
    once and a's journaled result is not asked for again."""
    plan = plan_of(
        step("a"),
        step("b", needs=("a",)),
        step("c", needs=("a",)),
        step("d", needs=("b", "c"), parts=["{{ steps.b.output.text }}", "{{ steps.c.output.text }}"]),
    )
    failing = FailingStore(store, (EventType.TOOL_OUTPUT, "b"))
    calls = KeyedCalls()
    finished = Finished()
    scheduler = Scheduler(failing, calls, Notes(), lease_seconds=30, poll_seconds=0.05, on_finish=finished)
    scheduler_over.append(scheduler)
    run = await create_run(store, plan)
    scheduler.start()

    assert await finished.wait(run.run_id) is RunState.SUCCEEDED

    assert failing.failed == [[(EventType.STEP_SUCCEEDED, "c"), (EventType.TOOL_OUTPUT, "b")]]
    assert calls.effects == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert calls.called().count("a") == 1  # journaled before the failure: never asked for again
    for sid in "bc":  # resumed under the same key, answered from the callee's record
        keys = [k for s, k in calls.keys if s == sid]
        assert len(keys) == 2 and keys[0] == keys[1] == f"{run.run_id}/{sid}/1"
    assert calls.params("d") == {"parts": ["b-out", "c-out"]}

    stored = await reload(store, run.run_id)
    assert stored.state is RunState.SUCCEEDED
    assert {s.step_id: (s.state, s.attempts) for s in stored.steps} == {
        sid: (StepState.SUCCEEDED, 1) for sid in "abcd"
    }
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    for sid in "abcd":
        assert types(events).count((EventType.STEP_SUCCEEDED, sid)) == 1
    assert not any(e.type is EventType.STEP_FAILED for e in events)
    assert [
        e.data.get("resumed") for e in events if (e.type, e.step_id) == (EventType.STEP_STARTED, "b")
    ] == [
        None,
        True,
    ]
    assert all(s.state in FINAL_STEP_STATES for s in stored.steps)


class BrokenStore(RunStore):
    """The real store, whose every transition fails (a write that always fails: a bug, not a blip)."""

    def __init__(self, store: RunStore) -> None:
        self.db = store.db
        self.journal = store.journal
        self.attempts = 0
        self.tried = asyncio.Event()

    async def transition(self, run_id: str, owner: str, new_events: Any, **kwargs: Any) -> bool:
        self.attempts += 1
        if self.attempts >= 2:
            self.tried.set()
        raise ConnectionResetError("connection reset by peer")


async def test_a_journal_write_that_always_fails_is_retried_once_a_lease_not_in_a_loop(
    store: RunStore, scheduler_over: list[Scheduler]
) -> None:
    """The first failure lets the run go at once (a blip resumes quickly); the second keeps the lease, so
    the run is not claimed again until the lease lapses, however often the poller looks."""
    failing = BrokenStore(store)
    scheduler = Scheduler(failing, KeyedCalls(), Notes(), lease_seconds=30, poll_seconds=0.05)
    scheduler_over.append(scheduler)
    run = await create_run(store, plan_of(step("a")))
    scheduler.start()

    await asyncio.wait_for(failing.tried.wait(), SAFETY)
    second = scheduler.active.get(run.run_id)
    if second is not None:  # the second execution ends (it lets the run go, without releasing it)
        await asyncio.wait_for(second, SAFETY)
    # The lease is still this worker's (not released): no worker, this one included, can claim the run.
    ours, _ = await store.lease_status(run.run_id, scheduler.owner)
    assert ours
    assert await store.claim_next("another-worker", 30, 10) == []
    assert failing.attempts == 2
    stored = await reload(store, run.run_id)
    assert not stored.state.final
