"""Scheduler: claim and run, cancel through the heartbeat, stop and hand over to another worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from agentflow_runtime.db import Database
from agentflow_worker.model import Event, EventType, RunState, StepState
from agentflow_worker.scheduler import Scheduler
from agentflow_worker.store import RunStore

from .conftest import SAFETY, FakeCalls, Notes, all_events, assert_contiguous, create_run, diamond, types

LEASE = 0.6
"""Short enough that the heartbeat (every LEASE/3 s) notices a cancel request quickly."""


class Finished:
    """on_finish callback: remembers final states and lets a test wait for one."""

    def __init__(self) -> None:
        self.states: dict[str, RunState] = {}
        self._done: dict[str, asyncio.Event] = {}

    def __call__(self, run_id: str, state: RunState) -> None:
        self.states[run_id] = state
        self._event(run_id).set()

    def _event(self, run_id: str) -> asyncio.Event:
        return self._done.setdefault(run_id, asyncio.Event())

    async def wait(self, run_id: str) -> RunState:
        await asyncio.wait_for(self._event(run_id).wait(), SAFETY)
        return self.states[run_id]


class Workers:
    """Schedulers made by a test, all stopped at its end."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.made: list[Scheduler] = []

    def new(
        self, calls: FakeCalls, finished: Finished, notify: Notes | None = None, lease: float = LEASE
    ) -> Scheduler:
        scheduler = Scheduler(
            self.store, calls, notify or Notes(), lease_seconds=lease, poll_seconds=0.05, on_finish=finished
        )
        self.made.append(scheduler)
        return scheduler


@pytest.fixture
async def workers(store: RunStore) -> AsyncIterator[Workers]:
    made = Workers(store)
    yield made
    for scheduler in made.made:
        await asyncio.wait_for(scheduler.stop(), SAFETY)


async def test_submit_claims_and_runs_to_completion(
    store: RunStore, calls: FakeCalls, workers: Workers
) -> None:
    finished = Finished()
    scheduler = workers.new(calls, finished)
    run = await create_run(store, diamond())

    assert await scheduler.submit(run.run_id)
    task = scheduler.active[run.run_id]
    assert not await scheduler.submit(run.run_id)  # already ours
    await asyncio.wait_for(task, SAFETY)
    assert finished.states[run.run_id] is RunState.SUCCEEDED
    assert scheduler.active == {}

    assert sorted(calls.called()) == ["a", "b", "c", "d"]
    stored = await store.get(run.run_id)
    assert stored is not None and stored.state is RunState.SUCCEEDED
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    assert events[-1].type is EventType.RUN_SUCCEEDED
    # The lease was released, and a finished run is nobody's to claim again.
    assert run.run_id not in await store.claimable(1000)
    assert not await scheduler.submit(run.run_id)


async def test_a_run_held_by_another_worker_is_not_submitted(
    store: RunStore, calls: FakeCalls, workers: Workers
) -> None:
    run = await create_run(store, diamond())
    assert await store.claim(run.run_id, "someone-else", 600)
    scheduler = workers.new(calls, Finished())
    assert not await scheduler.submit(run.run_id)
    assert calls.calls == []


async def test_cancel_request_cancels_the_blocked_call(
    store: RunStore, calls: FakeCalls, workers: Workers
) -> None:
    finished = Finished()
    calls.script("b", gate=asyncio.Event())
    calls.script("c", gate=asyncio.Event())
    scheduler = workers.new(calls, finished)
    run = await create_run(store, diamond())
    assert await scheduler.submit(run.run_id)
    await calls.wait_started("b")
    await calls.wait_started("c")

    await store.request_cancel(run.run_id, "changed my mind")
    assert await finished.wait(run.run_id) is RunState.CANCELLED

    assert sorted(calls.cancelled) == ["b", "c"]
    # ...and reaches the callees: keyed tool executions outlive the cancelled local call.
    for _ in range(int(SAFETY / 0.01)):
        if len(calls.stopped) == 2:
            break
        await asyncio.sleep(0.01)
    assert sorted(calls.stopped) == [("b", "model", 1), ("c", "memory", 1)]
    assert "d" not in calls.called()
    stored = await store.get(run.run_id)
    assert stored is not None
    assert stored.state is RunState.CANCELLED
    assert stored.error is not None and stored.error["reason"] == "RUN_CANCELLED"
    assert {s.step_id: s.state for s in stored.steps} == {
        "a": StepState.SUCCEEDED,
        "b": StepState.SKIPPED,
        "c": StepState.SKIPPED,
        "d": StepState.SKIPPED,
    }
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    assert events[-1].type is EventType.RUN_CANCELLED
    assert events[-1].run_state is RunState.CANCELLED
    assert types(events).count((EventType.RUN_CANCELLED, "")) == 1


async def test_cancel_requested_before_the_claim_cancels_without_calls(
    store: RunStore, calls: FakeCalls, workers: Workers
) -> None:
    finished = Finished()
    run = await create_run(store, diamond())
    await store.request_cancel(run.run_id, "never mind")
    assert await workers.new(calls, finished).submit(run.run_id)
    assert await finished.wait(run.run_id) is RunState.CANCELLED
    assert calls.calls == []
    events = await all_events(store, run.run_id)
    assert types(events) == [(EventType.RUN_CREATED, ""), (EventType.RUN_CANCELLED, "")]


async def test_stop_releases_the_lease_and_another_worker_resumes_from_the_journal(
    store: RunStore, workers: Workers
) -> None:
    first_calls = FakeCalls()
    first_calls.script("a", output={"text": "kept"})
    first_calls.script("b", gate=asyncio.Event())
    first_calls.script("c", gate=asyncio.Event())
    first = workers.new(first_calls, Finished())
    run = await create_run(store, diamond())
    assert await first.submit(run.run_id)
    await first_calls.wait_started("b")
    await first_calls.wait_started("c")

    await asyncio.wait_for(first.stop(), SAFETY)
    assert sorted(first_calls.cancelled) == ["b", "c"]
    assert first.active == {}
    assert run.run_id in await store.claimable(1000)
    interrupted = await store.get(run.run_id)
    assert interrupted is not None and interrupted.state is RunState.RUNNING

    second_calls = FakeCalls()
    finished = Finished()
    second = workers.new(second_calls, finished)
    assert second.owner != first.owner
    assert await second.submit(run.run_id)
    assert await finished.wait(run.run_id) is RunState.SUCCEEDED

    assert "a" not in second_calls.called()
    assert sorted(second_calls.called()) == ["b", "c", "d"]
    assert second_calls.params("b") == {"prompt": "summarize kept"}
    events = await all_events(store, run.run_id)
    assert_contiguous(events)
    assert types(events).count((EventType.STEP_SUCCEEDED, "a")) == 1
    assert types(events).count((EventType.RUN_STARTED, "")) == 1
    assert events[-1].type is EventType.RUN_SUCCEEDED


async def test_poller_picks_up_an_orphaned_run(store: RunStore, calls: FakeCalls, workers: Workers) -> None:
    run = await create_run(store, diamond())
    assert await store.claim(run.run_id, "crashed-worker", -1)  # its lease has run out
    finished = Finished()
    scheduler = workers.new(calls, finished)
    scheduler.start()
    assert await finished.wait(run.run_id) is RunState.SUCCEEDED
    assert sorted(calls.called()) == ["a", "b", "c", "d"]


async def test_lease_taken_by_another_worker_stops_the_run_and_its_calls(
    store: RunStore, calls: FakeCalls, workers: Workers
) -> None:
    calls.script("a", gate=asyncio.Event())
    scheduler = workers.new(calls, Finished())
    run = await create_run(store, diamond())
    assert await scheduler.submit(run.run_id)
    task = scheduler.active[run.run_id]
    await calls.wait_started("a")
    # Expire the lease under the scheduler and hand it to someone else.
    assert (await store.renew(run.run_id, scheduler.owner, -1))[0]
    assert await store.claim(run.run_id, "thief", 600)
    before = await all_events(store, run.run_id)

    await asyncio.wait_for(task, SAFETY)
    assert calls.cancelled == ["a"]
    assert await all_events(store, run.run_id) == before
    assert run.run_id not in scheduler.active
    # The thief's lease survives the loser's release.
    assert await store.renew(run.run_id, "thief", 600) == (True, False)


async def test_cancel_after_completion_does_not_overwrite_the_final_state(
    store: RunStore, calls: FakeCalls, workers: Workers
) -> None:
    """A cancel request that lands right after the final transition changes nothing: that transition
    released the lease with the final state, so neither the heartbeat nor a new claim acts on it."""
    finished = Finished()
    raced: list[str] = []

    async def notify(run_id: str, _events: Sequence[Event] = ()) -> None:
        state = await store.run_state(run_id)
        if state is not None and state[0] is RunState.SUCCEEDED and not raced:
            # CancelRun checked the run was not final a moment ago; its request lands now.
            raced.append(run_id)
            await store.request_cancel(run_id, "too late")
            # What CancelRun does next: try to claim the run (at any worker) to cancel it there.
            assert not await store.claim(run_id, "another-worker", 60)

    scheduler = Scheduler(store, calls, notify, lease_seconds=LEASE, on_finish=finished)
    workers.made.append(scheduler)
    run = await create_run(store, diamond())
    assert await scheduler.submit(run.run_id)
    assert await finished.wait(run.run_id) is RunState.SUCCEEDED
    assert raced == [run.run_id]

    events = await all_events(store, run.run_id)
    assert types(events).count((EventType.RUN_CANCELLED, "")) == 0
    assert events[-1].type is EventType.RUN_SUCCEEDED
    stored = await store.get(run.run_id)
    assert stored is not None and stored.state is RunState.SUCCEEDED


async def test_several_workers_never_claim_the_same_run(
    store: RunStore, workers: Workers, db: Database
) -> None:
    """Pollers of three workers race for the same runs: every run is executed by exactly one of them.

    PostgreSQL only: several workers on one SQLite file is not a supported deployment (three schedulers
    writing through one SQLite file at this rate can stall on "database is locked").
    """
    if db.is_sqlite:
        pytest.skip("several workers share PostgreSQL, not a SQLite file")
    calls = [FakeCalls() for _ in range(3)]
    finished = Finished()
    runs = [await create_run(store, diamond()) for _ in range(12)]
    # A lease long enough never to lapse on a loaded machine: this test is about claims racing, and a lapsed
    # lease would legitimately hand a run (and its unfinished step) to another worker.
    for fake in calls:
        workers.new(fake, finished, lease=30).start()
    for run in runs:
        assert await finished.wait(run.run_id) is RunState.SUCCEEDED
    executed = [run_id for fake in calls for run_id in fake.runs()]
    assert sorted(executed) == sorted(r.run_id for r in runs)
    for run in runs:
        events = await all_events(store, run.run_id)
        assert_contiguous(events)
        assert types(events).count((EventType.RUN_STARTED, "")) == 1


async def test_claim_next_takes_each_run_once_under_contention(store: RunStore) -> None:
    runs = [await create_run(store, diamond()) for _ in range(20)]
    taken: list[str] = []
    for _ in range(20):
        # Under contention a claimer may come back with fewer runs than it asked for (rows locked or
        # taken meanwhile are skipped); what matters is that no run is ever handed to two of them.
        batches = await asyncio.gather(*(store.claim_next(f"w{i}", 60, 5) for i in range(8)))
        taken += [run_id for batch in batches for run_id in batch]
        if not any(batches):
            break
    assert len(taken) == len(set(taken)) == 20
    assert sorted(taken) == sorted(r.run_id for r in runs)
