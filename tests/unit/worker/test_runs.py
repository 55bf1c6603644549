"""Runs: start (idempotent by request id), get, cancel, and watch with resume after a disconnect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import cast

import pytest
from agentflow_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from agentflow_runtime.protojson import utcnow
from agentflow_worker.hub import EventHub
from agentflow_worker.model import Event, EventType, Plan, RunState
from agentflow_worker.runs import Runs, parse_run_name
from agentflow_worker.scheduler import Scheduler
from agentflow_worker.store import RunStore

from .conftest import SAFETY, FakeCalls, all_events, assert_contiguous, create_run, diamond


@dataclass
class Service:
    runs: Runs
    scheduler: Scheduler
    calls: FakeCalls
    compiled: list[tuple[str, int]]


@pytest.fixture
async def service(store: RunStore) -> AsyncIterator[Service]:
    calls = FakeCalls()
    hub = EventHub()
    compiled: list[tuple[str, int]] = []

    async def compile_plan(workflow: str, version: int) -> Plan:
        compiled.append((workflow, version))
        return diamond()

    scheduler = Scheduler(store, calls, hub.notify, lease_seconds=0.6)
    yield Service(Runs(store, scheduler, hub, compile_plan), scheduler, calls, compiled)
    await asyncio.wait_for(scheduler.stop(), SAFETY)


async def collect(runs: Runs, name: str, after_seq: int = 0, tenant: str = "acme") -> list[Event]:
    async def drain() -> list[Event]:
        return [event async for event in runs.watch(tenant, name, after_seq)]

    return await asyncio.wait_for(drain(), SAFETY)


async def test_watch_yields_every_event_in_order_and_ends_when_final(service: Service) -> None:
    gate = asyncio.Event()
    service.calls.script("a", gate=gate)
    run, created = await service.runs.start("acme", "workflows/test", 0, {"topic": "x"}, {}, "")
    assert created
    watcher = asyncio.create_task(collect(service.runs, run.name))
    await service.calls.wait_started("a")
    gate.set()

    events = await asyncio.wait_for(watcher, SAFETY)
    assert_contiguous(events)
    assert events[0].type is EventType.RUN_CREATED
    assert events[-1].type is EventType.RUN_SUCCEEDED
    assert events == await all_events(service.runs.store, run.run_id)
    # A finished run's stream replays from the journal and ends.
    assert await collect(service.runs, run.name) == events


async def test_watch_resumes_after_seq_without_loss(service: Service) -> None:
    gate = asyncio.Event()
    service.calls.script("b", gate=gate)
    run, _ = await service.runs.start("acme", "workflows/test", 0, {"topic": "x"}, {}, "")

    # A client reads until b has started, then disconnects.
    head: list[Event] = []
    stream = cast(AsyncGenerator[Event, None], service.runs.watch("acme", run.name, 0))
    async with asyncio.timeout(SAFETY):
        async for event in stream:
            head.append(event)
            if (event.type, event.step_id) == (EventType.STEP_STARTED, "b"):
                break
    await stream.aclose()
    gate.set()  # the run moves on while nobody watches

    tail = await collect(service.runs, run.name, after_seq=head[-1].seq)
    events = head + tail
    assert_contiguous(events)
    assert events[-1].type is EventType.RUN_SUCCEEDED
    assert events == await all_events(service.runs.store, run.run_id)
    # after_seq of a finished run: exactly the events after it.
    assert await collect(service.runs, run.name, after_seq=3) == events[3:]
    assert await collect(service.runs, run.name, after_seq=len(events)) == []


async def test_watch_unknown_run_is_not_found(service: Service) -> None:
    with pytest.raises(NotFound) as caught:
        await collect(service.runs, "runs/doesnotexist")
    assert caught.value.reason == "RUN_NOT_FOUND"


async def test_watch_other_tenants_run_is_not_found(service: Service) -> None:
    run = await create_run(service.runs.store, diamond(), tenant="globex")
    with pytest.raises(NotFound):
        await collect(service.runs, run.name, tenant="acme")


@pytest.mark.parametrize(
    "name", ["run/abc", "runs/", "runs/a/b", "abc", "runs/-x", "runs/abc\n", "runs/" + "x" * 65]
)
async def test_watch_bad_name_is_invalid_argument(service: Service, name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await collect(service.runs, name)
    assert caught.value.reason == "INVALID_NAME"


async def test_watch_negative_after_seq_is_invalid_argument(service: Service) -> None:
    run = await create_run(service.runs.store, diamond())
    with pytest.raises(InvalidArgument):
        await collect(service.runs, run.name, after_seq=-1)


def test_parse_run_name() -> None:
    assert parse_run_name("runs/abc_D-1") == "abc_D-1"


async def test_start_is_idempotent_by_request_id(service: Service) -> None:
    first, created = await service.runs.start("acme", "workflows/test", 2, {}, {"k": "v"}, "req-1")
    again, created_again = await service.runs.start("acme", "workflows/test", 2, {}, {}, "req-1")
    assert created and not created_again
    assert again.run_id == first.run_id
    assert service.compiled == [("workflows/test", 2)]  # the repeat compiles nothing


async def test_start_refuses_a_bad_workflow_name(service: Service) -> None:
    with pytest.raises(InvalidArgument):
        await service.runs.start("acme", "Workflows/Bad Name", 0, {}, {}, "")
    assert service.compiled == []


async def test_cancel_an_unclaimed_run_cancels_it(service: Service) -> None:
    run = await create_run(service.runs.store, diamond())
    await service.runs.cancel("acme", run.name, "stop")
    async with asyncio.timeout(SAFETY):
        events = [event async for event in service.runs.watch("acme", run.name, 0)]
    assert events[-1].type is EventType.RUN_CANCELLED
    assert (await service.runs.get("acme", run.name)).state is RunState.CANCELLED
    assert service.calls.calls == []


async def test_cancel_a_finished_run_is_failed_precondition(service: Service) -> None:
    run, _ = await service.runs.start("acme", "workflows/test", 0, {"topic": "x"}, {}, "")
    await collect(service.runs, run.name)
    with pytest.raises(FailedPrecondition) as caught:
        await service.runs.cancel("acme", run.name, "late")
    assert caught.value.reason == "RUN_FINISHED"


async def test_hub_pushes_committed_events_to_the_runs_watchers_only() -> None:
    hub = EventHub()
    first = Event("r", 2, EventType.RUN_STARTED, "", RunState.RUNNING, {}, utcnow())
    second = Event("r", 3, EventType.STEP_STARTED, "a", RunState.RUNNING, {"attempt": 1}, utcnow())
    with hub.subscribe("r") as inbox, hub.subscribe("other") as elsewhere:
        assert hub.watchers("r") == 1
        await hub.notify("r", [first, second])
        await hub.notify("r")  # no events: a bare wake-up (read the journal)
        assert [inbox.get_nowait() for _ in range(3)] == [first, second, None]
        assert elsewhere.empty()
    assert hub.watchers("r") == 0
    await hub.notify("r", [first])  # nobody listens: nothing is kept


async def test_watch_gets_a_local_runs_events_pushed_not_polled(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal is read to catch up and to confirm the end, not once per event."""
    store = service.runs.store
    reads: list[int] = []
    read = store.events_after

    async def counted(run_id: str, after_seq: int, limit: int = 500) -> list[Event]:
        reads.append(after_seq)
        return await read(run_id, after_seq, limit)

    monkeypatch.setattr(store, "events_after", counted)
    gate = asyncio.Event()
    service.calls.script("a", gate=gate)
    run, _ = await service.runs.start("acme", "workflows/test", 0, {"topic": "x"}, {}, "")
    watcher = asyncio.create_task(collect(service.runs, run.name))
    await service.calls.wait_started("a")
    gate.set()
    events = await asyncio.wait_for(watcher, SAFETY)

    assert_contiguous(events)
    assert events == await read(run.run_id, 0, 500)
    assert len(events) > 10
    # Catch-up, then the end; a poll may fall in between on a loaded machine, but not one per event.
    assert len(reads) < len(events) // 2
