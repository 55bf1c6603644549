"""SQL for runs, the step journal and events. Each state change is one transaction with its event."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from agentflow_runtime.db import Database
from agentflow_runtime.protojson import utcnow
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from agentflow_worker.journal import DuplicateRun, RunWrite, open_journal
from agentflow_worker.model import (
    Event,
    EventType,
    Plan,
    RunRecord,
    RunState,
    StepRecord,
    StepState,
)
from agentflow_worker.tables import events, runs, steps


class RunStore:
    """The worker's persistence. Only the lease owner writes a run's steps and events."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.journal = open_journal(db)

    async def close(self) -> None:
        """Close the journal's own connection(s) (the Database is the caller's to dispose)."""
        await self.journal.close()

    # -- runs -------------------------------------------------------------------------------
    async def create(
        self, run: RunRecord, request_id: str | None, *, lease: tuple[str, float] | None = None
    ) -> tuple[RunRecord, bool]:
        """Insert a run, its pending steps and RUN_CREATED; (existing, False) on a repeated request.

        With `lease` (owner, seconds) the run is inserted already claimed by that owner (the worker that
        takes the StartRun executes the run itself: no separate claim transaction).
        """
        created = Event(run.run_id, 1, EventType.RUN_CREATED, "", RunState.PENDING, {}, run.create_time)
        row: dict[str, Any] = {
            "run_id": run.run_id,
            "tenant": run.tenant,
            "workflow": run.workflow,
            "workflow_version": run.workflow_version,
            "plan_hash": run.plan_hash,
            "plan": run.plan.to_json(),
            "state": run.state.value,
            "input": run.input,
            "labels": run.labels,
            "budget": run.budget,
            "request_id": request_id,
            "input_tokens": 0,
            "output_tokens": 0,
            "last_seq": 1,
            "cancel_requested": False,
            "create_time": run.create_time,
        }
        if lease is not None:
            row["lease_owner"] = lease[0]
            row["lease_expires"] = utcnow() + timedelta(seconds=lease[1])
        step_rows = [
            {
                "run_id": run.run_id,
                "step_id": s.id,
                "position": i,
                "kind": s.kind,
                "state": StepState.PENDING.value,
                "attempts": 0,
            }
            for i, s in enumerate(run.plan.steps)
        ]
        try:
            await self.journal.insert(row, step_rows, created)
        except DuplicateRun:
            if request_id is None:
                raise
            existing = await self.find_by_request(run.tenant, request_id)
            if existing is None:
                raise
            return existing, False
        run.last_seq = 1
        run.steps = [StepRecord(s.id, s.kind, StepState.PENDING) for s in run.plan.steps]
        return run, True

    async def find_by_request(self, tenant: str, request_id: str) -> RunRecord | None:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(runs).where(runs.c.tenant == tenant, runs.c.request_id == request_id)
                )
            ).first()
            return None if row is None else await _with_steps(conn, _run(row._mapping))

    async def get(self, run_id: str, tenant: str | None = None) -> RunRecord | None:
        """A run with its steps; None when missing or of another tenant."""
        query = select(runs).where(runs.c.run_id == run_id)
        if tenant is not None:
            query = query.where(runs.c.tenant == tenant)
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
            return None if row is None else await _with_steps(conn, _run(row._mapping))

    async def list_runs(self, tenant: str, offset: int, limit: int, workflow: str = "") -> list[RunRecord]:
        query = select(runs).where(runs.c.tenant == tenant)
        if workflow:
            query = query.where(runs.c.workflow == workflow)
        query = query.order_by(runs.c.create_time.desc(), runs.c.run_id.desc()).offset(offset).limit(limit)
        async with self.db.connect() as conn:
            return [_run(r._mapping) for r in (await conn.execute(query)).all()]

    # -- leases -----------------------------------------------------------------------------
    async def claimable(self, limit: int) -> list[str]:
        """Runs nobody holds: pending, or running under an expired lease (a crashed worker's)."""
        now = utcnow()
        query = (
            select(runs.c.run_id)
            .where(
                runs.c.state.in_([RunState.PENDING.value, RunState.RUNNING.value]),
                or_(runs.c.lease_expires.is_(None), runs.c.lease_expires < now),
            )
            .order_by(runs.c.create_time)
            .limit(limit)
        )
        async with self.db.connect() as conn:
            return [r.run_id for r in (await conn.execute(query)).all()]

    async def claim_next(self, owner: str, ttl: float, limit: int) -> list[str]:
        """Claim up to `limit` claimable runs, oldest first, in one statement; the run ids taken.

        On PostgreSQL the candidates are picked `FOR UPDATE SKIP LOCKED`: pollers of several workers
        polling at once each take different runs instead of queueing on the same rows. (SQLite serialises
        writers, so the plain conditional UPDATE is already exclusive there.) The outer WHERE repeats the
        claimable condition, so a run is never taken from a live lease either way.
        """
        now = utcnow()
        claimable = and_(
            runs.c.state.in_([RunState.PENDING.value, RunState.RUNNING.value]),
            or_(runs.c.lease_expires.is_(None), runs.c.lease_expires < now),
        )
        candidates = select(runs.c.run_id).where(claimable).order_by(runs.c.create_time).limit(limit)
        if self.db.engine.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(runs)
                .where(runs.c.run_id.in_(candidates.scalar_subquery()), claimable)
                .values(lease_owner=owner, lease_expires=now + timedelta(seconds=ttl))
                .returning(runs.c.run_id)
            )
            return [row.run_id for row in result.all()]

    async def claim(self, run_id: str, owner: str, ttl: float) -> bool:
        """Take the lease if nobody holds it (one UPDATE: atomic on SQLite and PostgreSQL)."""
        now = utcnow()
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(runs)
                .where(
                    runs.c.run_id == run_id,
                    runs.c.state.in_([RunState.PENDING.value, RunState.RUNNING.value]),
                    or_(runs.c.lease_expires.is_(None), runs.c.lease_expires < now),
                )
                .values(lease_owner=owner, lease_expires=now + timedelta(seconds=ttl))
            )
            return bool(result.rowcount == 1)

    async def renew(self, run_id: str, owner: str, ttl: float) -> tuple[bool, bool]:
        """Extend the lease; (still ours, cancel requested)."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id, runs.c.lease_owner == owner)
                .values(lease_expires=utcnow() + timedelta(seconds=ttl))
                .returning(runs.c.cancel_requested)
            )
            row = result.first()
            return (row is not None, bool(row and row.cancel_requested))

    async def lease_status(self, run_id: str, owner: str) -> tuple[bool, bool]:
        """(still ours, cancel requested), read without renewing."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(runs.c.lease_owner, runs.c.cancel_requested).where(runs.c.run_id == run_id)
                )
            ).first()
        return (row is not None and row.lease_owner == owner, bool(row and row.cancel_requested))

    async def request_cancel(self, run_id: str, reason: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id)
                .values(cancel_requested=True, cancel_reason=reason)
            )

    # -- transitions (lease owner only) ------------------------------------------------------
    async def transition(
        self,
        run_id: str,
        owner: str,
        new_events: Sequence[Event],
        *,
        run_values: dict[str, Any] | None = None,
        step_values: dict[str, dict[str, Any]] | None = None,
        add_tokens: tuple[int, int] = (0, 0),
        lease_seconds: float | None = None,
        release: bool = False,
    ) -> bool:
        """Write events and the changes they record in one transaction; False if the lease is lost.

        The lease is checked in the runs UPDATE itself (`lease_owner = owner AND lease_expires > now`).
        `lease_seconds` renews the lease in the same statement (transitions are the heartbeat of a run
        whose steps are short); `release` gives it up (the run's final transition).
        """
        now = utcnow()
        values: dict[str, Any] = dict(run_values or {})
        if new_events:
            values["last_seq"] = new_events[-1].seq
        if release:
            values["lease_owner"] = None
            values["lease_expires"] = None
        elif lease_seconds is not None:
            values["lease_expires"] = now + timedelta(seconds=lease_seconds)
        increments = tuple(
            (column, amount)
            for column, amount in (("input_tokens", add_tokens[0]), ("output_tokens", add_tokens[1]))
            if amount
        )
        if not values and not increments:
            increments = (("last_seq", 0),)  # nothing to change: the UPDATE still checks the lease
        change = RunWrite(run_id, owner, now, values, increments, dict(step_values or {}), new_events)
        return await self.journal.write(change) is not None

    async def release(self, run_id: str, owner: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id, runs.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires=None)
            )

    # -- events -----------------------------------------------------------------------------
    async def events_after(self, run_id: str, after_seq: int, limit: int = 500) -> list[Event]:
        return await self.journal.events_after(run_id, after_seq, limit)

    async def step_events(self, run_id: str, step_id: str, types: Sequence[EventType]) -> list[Event]:
        """A step's events of the given types, in order (an agent step's journal of turns)."""
        query = (
            select(events)
            .where(
                events.c.run_id == run_id,
                events.c.step_id == step_id,
                events.c.type.in_([t.value for t in types]),
            )
            .order_by(events.c.seq)
        )
        async with self.db.connect() as conn:
            return [_event(r._mapping) for r in (await conn.execute(query)).all()]

    async def input_digests(self, run_id: str) -> dict[str, str]:
        """The `input_digest` journaled with each step's success (the last one per step)."""
        query = (
            select(events.c.step_id, events.c.data)
            .where(events.c.run_id == run_id, events.c.type == EventType.STEP_SUCCEEDED.value)
            .order_by(events.c.seq)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {r.step_id: r.data["input_digest"] for r in rows if (r.data or {}).get("input_digest")}

    async def run_state(self, run_id: str) -> tuple[RunState, int] | None:
        return await self.journal.run_state(run_id)

    async def tenant_of(self, run_id: str) -> str | None:
        """The run's tenant (None when there is no such run): the cheap existence check of a watch."""
        return await self.journal.tenant_of(run_id)

    async def count_runs(self, tenant: str) -> int:
        async with self.db.connect() as conn:
            value = await conn.scalar(select(func.count()).select_from(runs).where(runs.c.tenant == tenant))
            return int(value or 0)


async def _with_steps(conn: AsyncConnection, run: RunRecord) -> RunRecord:
    rows = (
        await conn.execute(select(steps).where(steps.c.run_id == run.run_id).order_by(steps.c.position))
    ).all()
    run.steps = [
        StepRecord(
            step_id=r.step_id,
            kind=r.kind,
            state=StepState(r.state),
            output=r.output,
            error=r.error,
            attempts=r.attempts,
            start_time=r.start_time,
            end_time=r.end_time,
        )
        for r in rows
    ]
    return run


def _run(row: Any) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        tenant=row["tenant"],
        workflow=row["workflow"],
        workflow_version=row["workflow_version"],
        plan_hash=row["plan_hash"],
        plan=Plan.from_json(row["plan"]),
        state=RunState(row["state"]),
        input=row["input"] or {},
        labels=row["labels"] or {},
        budget=row["budget"],
        create_time=row["create_time"] or utcnow(),
        output=row["output"],
        error=row["error"],
        input_tokens=int(row["input_tokens"] or 0),
        output_tokens=int(row["output_tokens"] or 0),
        last_seq=int(row["last_seq"] or 0),
        cancel_requested=bool(row["cancel_requested"]),
        cancel_reason=row["cancel_reason"] or "",
        end_time=row["end_time"],
    )


def _event(row: Any) -> Event:
    return Event(
        run_id=row["run_id"],
        seq=int(row["seq"]),
        type=EventType(row["type"]),
        step_id=row["step_id"] or "",
        run_state=RunState(row["run_state"]),
        data=row["data"] or {},
        create_time=row["create_time"] or utcnow(),
    )
