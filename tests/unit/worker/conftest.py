"""Fixtures for the worker: a database on SQLite and PostgreSQL, a store, and a scripted StepCalls."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agentflow_runtime.db import Database
from agentflow_runtime.protojson import utcnow
from agentflow_worker.calls import Emit, StepFailed, StepResult
from agentflow_worker.model import Event, EventType, Plan, PlanStep, RunRecord, RunState, StepState
from agentflow_worker.store import RunStore
from agentflow_worker.tables import metadata
from sqlalchemy import text

from tests.support import require_postgres

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
SAFETY = 30.0
"""Seconds before a test gives up waiting; never an assertion about speed."""


@pytest.fixture(scope="module")
async def pg_database() -> AsyncIterator[Database]:
    """One PostgreSQL schema per test module, dropped afterwards."""
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    database = Database(POSTGRES_URL, schema=schema)
    await database.create_all(metadata)
    try:
        yield database
    finally:
        await database.dispose()
        admin = Database(POSTGRES_URL)
        try:
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            await admin.dispose()


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}")
    await database.create_all(metadata)
    yield database
    await database.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Database:
    """The same tests on a SQLite file and on the real PostgreSQL server."""
    name = "pg_database" if request.param == "postgres" else "sqlite_database"
    database: Database = request.getfixturevalue(name)
    return database


@pytest.fixture
async def store(db: Database) -> AsyncIterator[RunStore]:
    run_store = RunStore(db)
    yield run_store
    await run_store.close()


# -- plans and runs ---------------------------------------------------------------------------


def step_states(run: RunRecord) -> dict[str, StepState]:
    """Each step's state, by step id."""
    return {s.step_id: s.state for s in run.steps}


def step(step_id: str, kind: str = "tool", needs: tuple[str, ...] = (), **params: Any) -> PlanStep:
    return PlanStep(step_id, kind, needs, dict(params))


def plan_of(*steps: PlanStep, output: Any = None) -> Plan:
    return Plan("workflows/test", 1, "hash-" + "-".join(s.id for s in steps), tuple(steps), output)


def diamond() -> Plan:
    """a; b and c need a; d needs b and c. Templates pass outputs from step to step."""
    return plan_of(
        step("a", "tool", topic="{{ input.topic }}"),
        step("b", "model", ("a",), prompt="summarize {{ steps.a.output.text }}"),
        step("c", "memory", ("a",), text="{{ steps.a.output.text | upper }}"),
        step("d", "tool", ("b", "c"), parts=["{{ steps.b.output.text }}", "{{ steps.c.output.text }}"]),
        output={"result": "{{ steps.d.output.text }}", "b": "{{ steps.b.output }}"},
    )


def new_run(plan: Plan, tenant: str = "acme", run_input: dict[str, Any] | None = None) -> RunRecord:
    return RunRecord(
        run_id=uuid.uuid4().hex,
        tenant=tenant,
        workflow=plan.workflow,
        workflow_version=plan.workflow_version,
        plan_hash=plan.plan_hash,
        plan=plan,
        state=RunState.PENDING,
        input=dict(run_input if run_input is not None else {"topic": "tides"}),
        labels={"team": "ops"},
        create_time=utcnow(),
    )


async def create_run(
    store: RunStore, plan: Plan, *, tenant: str = "acme", run_input: dict[str, Any] | None = None
) -> RunRecord:
    run, created = await store.create(new_run(plan, tenant, run_input), None)
    assert created
    return run


async def all_events(store: RunStore, run_id: str) -> list[Event]:
    return await store.events_after(run_id, 0, limit=10_000)


def types(events: list[Event]) -> list[tuple[EventType, str]]:
    return [(e.type, e.step_id) for e in events]


def assert_contiguous(events: list[Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


# -- a scripted StepCalls ---------------------------------------------------------------------


@dataclass
class Script:
    """What the fake does for one step id."""

    output: Any = None
    fail: dict[str, Any] | None = None
    gate: asyncio.Event | None = None
    """Block until set (or until cancelled)."""
    rendezvous: tuple[str, ...] = ()
    """Block until these steps' calls have started: proves they run at the same time."""
    emits: list[tuple[EventType, dict[str, Any]]] = field(default_factory=list)
    tokens: tuple[int, int] = (0, 0)
    crash: Exception | None = None
    fail_times: int = 0
    """Fail (with `fail`) only the first `fail_times` calls, then succeed; 0 = as `fail` says, always."""


class FakeCalls:
    """Records each call; each step behaves as its Script says."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.attempts: list[tuple[str, int]] = []
        self.run_ids: list[str] = []
        self.stopped: list[tuple[str, str, int]] = []
        self.started: dict[str, asyncio.Event] = {}
        self.finished: list[str] = []
        self.cancelled: list[str] = []
        self.tasks: set[asyncio.Task[Any]] = set()

    def script(self, step_id: str, **kwargs: Any) -> Script:
        self.scripts[step_id] = Script(**kwargs)
        return self.scripts[step_id]

    def started_event(self, step_id: str) -> asyncio.Event:
        return self.started.setdefault(step_id, asyncio.Event())

    async def wait_started(self, step_id: str) -> None:
        await asyncio.wait_for(self.started_event(step_id).wait(), SAFETY)

    def runs(self) -> set[str]:
        """The runs this fake made calls for."""
        return set(self.run_ids)

    def called(self) -> list[str]:
        return [step_id for step_id, _, _ in self.calls]

    def params(self, step_id: str) -> dict[str, Any]:
        return next(p for s, _, p in self.calls if s == step_id)

    def abandon(self) -> None:
        """Cancel calls still in flight (clean-up for tests that expose a leak)."""
        for task in self.tasks:
            task.cancel()

    async def _call(
        self, kind: str, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, attempt: int
    ) -> StepResult:
        self.calls.append((step_id, kind, params))
        self.attempts.append((step_id, attempt))
        self.run_ids.append(run.run_id)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        script = self.scripts.get(step_id, Script())
        self.started_event(step_id).set()
        try:
            for event_type, data in script.emits:
                await emit(event_type, step_id, data)
            for other in script.rendezvous:
                await asyncio.wait_for(self.started_event(other).wait(), SAFETY)
            if script.gate is not None:
                await script.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(step_id)
            raise
        finally:
            self.tasks.discard(task)
        if script.crash is not None:
            raise script.crash
        if script.fail is not None:
            failures = sum(1 for s, _ in self.attempts if s == step_id)
            if not script.fail_times or failures <= script.fail_times:
                raise StepFailed(script.fail)
        self.finished.append(step_id)
        output = script.output if script.output is not None else {"text": f"{step_id}-out"}
        return StepResult(output, script.tokens[0], script.tokens[1], {"fake": True})

    async def model(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, *, attempt: int = 1
    ) -> StepResult:
        return await self._call("model", run, step_id, params, emit, attempt)

    async def tool(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, *, attempt: int = 1
    ) -> StepResult:
        return await self._call("tool", run, step_id, params, emit, attempt)

    async def memory(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, *, attempt: int = 1
    ) -> StepResult:
        return await self._call("memory", run, step_id, params, emit, attempt)

    async def stop(
        self, run: RunRecord, step_id: str, kind: str, params: dict[str, Any], attempt: int
    ) -> None:
        self.stopped.append((step_id, kind, attempt))


class Notes:
    """A notify callback that records, per event published, which run it was of."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.seqs: list[int] = []

    async def __call__(self, run_id: str, events: Sequence[Event] = ()) -> None:
        self.runs += [run_id] * len(events)
        self.seqs += [e.seq for e in events]


@pytest.fixture
def calls() -> FakeCalls:
    return FakeCalls()
