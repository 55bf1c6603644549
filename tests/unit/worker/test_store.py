"""RunStore on a SQLite file and on PostgreSQL: create, leases, owner-only transitions."""

from __future__ import annotations

import asyncio
from typing import Any

from agentflow_runtime.protojson import utcnow
from agentflow_worker.model import Event, EventType, RunState, StepState
from agentflow_worker.store import RunStore

from .conftest import all_events, create_run, diamond, new_run


async def test_create_inserts_run_pending_steps_and_created_event(store: RunStore) -> None:
    record = new_run(diamond())
    run, created = await store.create(record, "req-1")
    assert created
    assert run.last_seq == 1

    stored = await store.get(run.run_id)
    assert stored is not None
    assert stored.state is RunState.PENDING
    assert stored.tenant == "acme"
    assert stored.input == {"topic": "tides"}
    assert stored.labels == {"team": "ops"}
    assert stored.plan == record.plan
    assert stored.last_seq == 1
    assert not stored.cancel_requested
    assert stored.create_time.tzinfo is not None
    assert [(s.step_id, s.kind, s.state, s.attempts) for s in stored.steps] == [
        ("a", "tool", StepState.PENDING, 0),
        ("b", "model", StepState.PENDING, 0),
        ("c", "memory", StepState.PENDING, 0),
        ("d", "tool", StepState.PENDING, 0),
    ]
    events = await all_events(store, run.run_id)
    assert [(e.seq, e.type, e.run_state) for e in events] == [(1, EventType.RUN_CREATED, RunState.PENDING)]


async def test_repeated_request_id_returns_the_existing_run(store: RunStore) -> None:
    first, created = await store.create(new_run(diamond()), "req-same")
    assert created
    again, created_again = await store.create(new_run(diamond()), "req-same")
    assert not created_again
    assert again.run_id == first.run_id
    assert [s.step_id for s in again.steps] == ["a", "b", "c", "d"]
    # No second run and no second event stream.
    assert await store.get(first.run_id) is not None
    assert len(await all_events(store, first.run_id)) == 1
    # Request ids are per tenant.
    other, created_other = await store.create(new_run(diamond(), tenant="globex"), "req-same")
    assert created_other
    assert other.run_id != first.run_id


async def test_get_is_tenant_scoped(store: RunStore) -> None:
    run = await create_run(store, diamond())
    assert await store.get(run.run_id, "acme") is not None
    assert await store.get(run.run_id, "globex") is None
    assert await store.get("no-such-run") is None


async def test_only_one_of_two_owners_wins_the_claim(store: RunStore) -> None:
    run = await create_run(store, diamond())
    results = await asyncio.gather(store.claim(run.run_id, "w1", 60), store.claim(run.run_id, "w2", 60))
    assert sorted(results) == [False, True]
    # The holder cannot claim twice either: a live lease is nobody's to take.
    winner = "w1" if results[0] else "w2"
    assert not await store.claim(run.run_id, winner, 60)
    assert run.run_id not in await store.claimable(1000)


async def test_expired_lease_can_be_claimed_by_another_owner(store: RunStore) -> None:
    run = await create_run(store, diamond())
    assert await store.claim(run.run_id, "w1", -1)  # a lease that has already run out
    assert run.run_id in await store.claimable(1000)
    assert await store.claim(run.run_id, "w2", 60)
    assert not await store.claim(run.run_id, "w1", 60)
    assert await store.renew(run.run_id, "w1", 60) == (False, False)
    assert await store.renew(run.run_id, "w2", 60) == (True, False)


async def test_renew_reports_lost_lease_and_cancel_request(store: RunStore) -> None:
    run = await create_run(store, diamond())
    assert await store.claim(run.run_id, "w1", 60)
    assert await store.renew(run.run_id, "w1", 60) == (True, False)
    await store.request_cancel(run.run_id, "user asked")
    assert await store.renew(run.run_id, "w1", 60) == (True, True)
    stored = await store.get(run.run_id)
    assert stored is not None and stored.cancel_requested
    # The lease runs out and another worker takes it: the first one learns it lost the run.
    assert await store.renew(run.run_id, "w1", -1) == (True, True)
    assert await store.claim(run.run_id, "w2", 60)
    assert await store.renew(run.run_id, "w1", 60) == (False, False)
    assert await store.renew(run.run_id, "w2", 60) == (True, True)


async def test_release_makes_the_run_claimable(store: RunStore) -> None:
    run = await create_run(store, diamond())
    assert await store.claim(run.run_id, "w1", 60)
    await store.release(run.run_id, "w2")  # not the holder: no effect
    assert not await store.claim(run.run_id, "w2", 60)
    await store.release(run.run_id, "w1")
    assert run.run_id in await store.claimable(1000)
    assert await store.claim(run.run_id, "w2", 60)


async def test_final_runs_are_not_claimable(store: RunStore) -> None:
    run = await create_run(store, diamond())
    assert await store.claim(run.run_id, "w1", 60)
    ended = Event(run.run_id, 2, EventType.RUN_CANCELLED, "", RunState.CANCELLED, {}, utcnow())
    assert await store.transition(run.run_id, "w1", [ended], run_values={"state": "CANCELLED"})
    await store.release(run.run_id, "w1")
    assert run.run_id not in await store.claimable(1000)
    assert not await store.claim(run.run_id, "w2", 60)


async def test_transition_refuses_a_non_owner_and_writes_nothing(store: RunStore) -> None:
    run = await create_run(store, diamond())
    assert await store.claim(run.run_id, "w1", 60)
    started = Event(run.run_id, 2, EventType.RUN_STARTED, "", RunState.RUNNING, {}, utcnow())
    step_started = Event(run.run_id, 3, EventType.STEP_STARTED, "a", RunState.RUNNING, {}, utcnow())
    changes: dict[str, Any] = {
        "run_values": {"state": RunState.RUNNING.value},
        "step_values": {"a": {"state": StepState.RUNNING.value, "attempts": 1}},
    }

    refused = await store.transition(run.run_id, "w2", [started, step_started], add_tokens=(5, 7), **changes)
    assert refused is False
    stored = await store.get(run.run_id)
    assert stored is not None
    assert stored.state is RunState.PENDING
    assert stored.last_seq == 1
    assert (stored.input_tokens, stored.output_tokens) == (0, 0)
    assert stored.steps[0].state is StepState.PENDING and stored.steps[0].attempts == 0
    assert [e.seq for e in await all_events(store, run.run_id)] == [1]

    # Nor does an unleased run accept writes from anyone.
    await store.release(run.run_id, "w1")
    assert not await store.transition(run.run_id, "w1", [started], **changes)
    assert [e.seq for e in await all_events(store, run.run_id)] == [1]

    # The holder's identical write lands, all of it.
    assert await store.claim(run.run_id, "w1", 60)
    assert await store.transition(run.run_id, "w1", [started, step_started], add_tokens=(5, 7), **changes)
    stored = await store.get(run.run_id)
    assert stored is not None
    assert stored.state is RunState.RUNNING
    assert stored.last_seq == 3
    assert (stored.input_tokens, stored.output_tokens) == (5, 7)
    assert stored.steps[0].state is StepState.RUNNING and stored.steps[0].attempts == 1
    events = await all_events(store, run.run_id)
    assert [(e.seq, e.type, e.step_id) for e in events] == [
        (1, EventType.RUN_CREATED, ""),
        (2, EventType.RUN_STARTED, ""),
        (3, EventType.STEP_STARTED, "a"),
    ]
    assert await store.run_state(run.run_id) == (RunState.RUNNING, 3)
    assert await store.events_after(run.run_id, 2) == events[2:]


async def test_list_and_count_runs(store: RunStore) -> None:
    tenant = f"tenant-{new_run(diamond()).run_id[:8]}"
    made = [await create_run(store, diamond(), tenant=tenant) for _ in range(3)]
    assert await store.count_runs(tenant) == 3
    listed = await store.list_runs(tenant, 0, 2)
    assert [r.run_id for r in listed] == [r.run_id for r in reversed(made)][:2]
    assert [r.run_id for r in await store.list_runs(tenant, 2, 2)] == [made[0].run_id]
    assert await store.list_runs(tenant, 0, 10, workflow="workflows/other") == []


async def test_the_journal_writes_values_the_sqlalchemy_queries_read_alike(store: RunStore) -> None:
    """The raw-driver journal and SQLAlchemy share the rows: a lease the journal renews is compared by
    `claim` (on SQLite timestamps compare as text, so the format must be SQLAlchemy's), and outputs, errors,
    times and events read back through `get` as they were written."""
    run, created = await store.create(new_run(diamond()), None, lease=("w1", 600))
    assert created
    assert not await store.claim(run.run_id, "w2", 60)  # inserted claimed, unexpired
    started = utcnow()
    event = Event(
        run.run_id, 2, EventType.STEP_SUCCEEDED, "a", RunState.RUNNING, {"output": {"n": 1}}, started
    )
    assert await store.transition(
        run.run_id,
        "w1",
        [event],
        run_values={"state": RunState.RUNNING.value},
        step_values={
            "a": {"state": StepState.SUCCEEDED.value, "output": {"n": 1}, "error": None, "end_time": started}
        },
        add_tokens=(3, 4),
        lease_seconds=-1,  # renewed into the past: expired from now on
    )
    stored = await store.get(run.run_id)
    assert stored is not None and stored.state is RunState.RUNNING and stored.last_seq == 2
    assert (stored.input_tokens, stored.output_tokens) == (3, 4)
    a = next(s for s in stored.steps if s.step_id == "a")
    assert (a.state, a.output, a.error, a.end_time) == (StepState.SUCCEEDED, {"n": 1}, None, started)
    assert (await all_events(store, run.run_id))[-1] == event
    assert await store.run_state(run.run_id) == (RunState.RUNNING, 2)
    assert await store.tenant_of(run.run_id) == run.tenant
    # The expired lease: the journal refuses its owner, and SQLAlchemy's claim hands the run to another.
    assert not await store.transition(run.run_id, "w1", [], run_values={"state": RunState.RUNNING.value})
    assert await store.claim(run.run_id, "w2", 60)
    assert await store.transition(run.run_id, "w2", [], run_values={"state": RunState.RUNNING.value})
