"""Durable waiting for approval: each move is one transaction, so a ticket and the run's state never disagree.

- `park` (the lease owner): the tickets, the steps and the run to WAITING, one APPROVAL_REQUESTED event per
  ticket, and the lease released — no worker holds a waiting run and no poll claims it.
- `settle` (a decision, or the expiry sweeper): the ticket moves from PENDING only if it still is and has not
  expired (a conditional update), with an APPROVAL_DECIDED event; when it was the run's last pending ticket,
  the waiting steps go back to where they were and the run to PENDING, claimable again.
- `cancel_waiting`: a waiting run is cancelled in place; its open tickets are closed as rejected.

Events outside a lease take their sequence number from the run row itself (`last_seq + 1` in an UPDATE that
also checks the run is WAITING): that row lock also serialises decisions of tickets of the same run.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agentflow_runtime.db import Database
from agentflow_runtime.errors import FailedPrecondition
from agentflow_runtime.protojson import utcnow
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from agentflow_worker.gate import ParkRequest
from agentflow_worker.model import Event, EventType, RunRecord, RunState, StepState, error_json
from agentflow_worker.store import RunStore
from agentflow_worker.tables import approvals, events, runs, steps

__all__ = ["Parked", "Settled", "cancel_waiting", "note_tickets", "park", "settle"]


@dataclass(frozen=True)
class Parked:
    """What `park` wrote."""

    events: list[Event]
    tickets: list[dict[str, Any]]


@dataclass(frozen=True)
class Settled:
    """What `settle` wrote: the ticket's new state, and whether the run was resumed."""

    approval_id: str
    run_id: str
    tenant: str
    state: str
    resumed: bool


async def park(
    store: RunStore, run: RunRecord, owner: str, seq: int, requests: Sequence[ParkRequest]
) -> Parked | None:
    """Write the tickets, the WAITING states and their events and release the lease, in one transaction;
    None when the lease was lost or the run's cancellation requested (then nothing is written: the run is
    cancelled by whoever holds it next, as any run whose worker stopped).

    A rare write, so it goes through SQLAlchemy rather than the hot-path journal (`journal.py`); both take
    the same write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: the run row)."""
    now = utcnow()
    tickets: list[dict[str, Any]] = []
    batch: list[Event] = []
    for request in requests:
        rule = request.rule
        ticket: dict[str, Any] = {
            "approval_id": uuid.uuid4().hex,
            "tenant": run.tenant,
            "run_id": run.run_id,
            "step_id": request.step_id,
            "state": "PENDING",
            "request": {**request.call.describe(), "reason": rule.description, "call_key": request.call_key},
            "decided_by": "",
            "comment": "",
            "create_time": now,
            "expire_time": now + timedelta(seconds=rule.ttl_seconds),
            "call_key": request.call_key,
            "rule": rule.name,
            "approver_roles": list(rule.approvers),
            "on_expiry": rule.on_expiry,
            "resume_state": request.resume_state.value,
        }
        if not request.existing:
            tickets.append(ticket)
        seq += 1
        data = {
            "approval": f"approvals/{ticket['approval_id']}",
            "rule": rule.name,
            "approver_roles": list(rule.approvers),
            "expire_time": ticket["expire_time"].isoformat(),
            "request": ticket["request"],
        }
        if request.existing:
            data.pop("approval")
        batch.append(
            Event(run.run_id, seq, EventType.APPROVAL_REQUESTED, request.step_id, RunState.WAITING, data, now)
        )

    async with store.db.begin() as conn:
        # Under the lease (as every journal write): owner and unexpired, checked in the UPDATE itself.
        held = await conn.execute(
            update(runs)
            .where(
                runs.c.run_id == run.run_id,
                runs.c.lease_owner == owner,
                runs.c.lease_expires > now,
                runs.c.cancel_requested.is_(False),
            )
            .values(
                state=RunState.WAITING.value, lease_owner=None, lease_expires=None, last_seq=batch[-1].seq
            )
        )
        if held.rowcount != 1:
            return None
        for request in requests:
            await conn.execute(
                update(steps)
                .where(steps.c.run_id == run.run_id, steps.c.step_id == request.step_id)
                .values(state=StepState.WAITING.value)
            )
        await conn.execute(events.insert(), [e.row() for e in batch])
        if tickets:
            await conn.execute(approvals.insert(), tickets)
    return Parked(batch, tickets)


async def settle(
    db: Database, approval_id: str, state: str, decided_by: str, comment: str, *, expiring: bool = False
) -> Settled:
    """Decide (or, `expiring`, expire) a pending ticket; FailedPrecondition when it is not pending any more.

    A decision needs its run WAITING; an expiry of a ticket whose run is not waiting only closes the ticket.
    """
    now = utcnow()
    async with db.begin() as conn:
        ticket = (await conn.execute(select(approvals).where(approvals.c.approval_id == approval_id))).first()
        if ticket is None:
            raise FailedPrecondition(f"approvals/{approval_id} is gone", reason="APPROVAL_NOT_FOUND")
        locked = (
            await conn.execute(
                update(runs)
                .where(runs.c.run_id == ticket.run_id, runs.c.state == RunState.WAITING.value)
                .values(last_seq=runs.c.last_seq + 1)
                .returning(runs.c.last_seq)
            )
        ).first()
        if locked is None and not expiring:
            current = await _not_pending(conn, approval_id, now)
            if current.reason != "APPROVAL_PENDING":
                raise current  # decided (or expired) meanwhile: that is the news, not the run's state
            raise FailedPrecondition(
                f"run {ticket.run_id} is not waiting for approvals/{approval_id}",
                reason="RUN_NOT_WAITING",
                metadata={"run": f"runs/{ticket.run_id}"},
            )
        open_ticket = approvals.c.state == "PENDING"
        in_time = approvals.c.expire_time.is_(None) | (approvals.c.expire_time > now)
        condition = open_ticket & (~in_time if expiring else in_time)
        changed = await conn.execute(
            update(approvals)
            .where(approvals.c.approval_id == approval_id, condition)
            .values(state=state, decided_by=decided_by, comment=comment, decide_time=now)
        )
        if changed.rowcount != 1:
            raise await _not_pending(conn, approval_id, now)
        if locked is None:
            return Settled(approval_id, ticket.run_id, ticket.tenant, state, False)
        resumed = await _resume_if_done(conn, ticket.run_id)
        run_state = RunState.PENDING if resumed else RunState.WAITING
        event = {
            "run_id": ticket.run_id,
            "seq": int(locked.last_seq),
            "type": EventType.APPROVAL_DECIDED.value,
            "step_id": ticket.step_id,
            "run_state": run_state.value,
            "data": {
                "approval": f"approvals/{approval_id}",
                "state": state,
                "decided_by": decided_by,
                "comment": comment,
                "rule": ticket.rule,
                "run_resumed": resumed,
            },
            "create_time": now,
        }
        await conn.execute(events.insert(), [event])
    return Settled(approval_id, ticket.run_id, ticket.tenant, state, resumed)


async def _resume_if_done(conn: AsyncConnection, run_id: str) -> bool:
    """With no pending ticket left, put the waiting steps back and make the run claimable."""
    left = await conn.scalar(
        select(func.count())
        .select_from(approvals)
        .where(approvals.c.run_id == run_id, approvals.c.state == "PENDING")
    )
    if left:
        return False
    rows = (
        await conn.execute(
            select(approvals.c.step_id, approvals.c.resume_state)
            .where(approvals.c.run_id == run_id)
            .order_by(approvals.c.create_time)
        )
    ).all()
    back = {r.step_id: r.resume_state for r in rows}  # the newest ticket of each step says
    for step_id, resume_state in back.items():
        await conn.execute(
            update(steps)
            .where(
                steps.c.run_id == run_id, steps.c.step_id == step_id, steps.c.state == StepState.WAITING.value
            )
            .values(state=resume_state)
        )
    await conn.execute(update(runs).where(runs.c.run_id == run_id).values(state=RunState.PENDING.value))
    return True


async def _not_pending(conn: AsyncConnection, approval_id: str, now: datetime) -> FailedPrecondition:
    row = (await conn.execute(select(approvals).where(approvals.c.approval_id == approval_id))).first()
    name = f"approvals/{approval_id}"
    if row is not None and row.state == "PENDING":
        if row.expire_time is not None and row.expire_time <= now:
            return FailedPrecondition(
                f"{name} has expired", reason="APPROVAL_EXPIRED", metadata={"state": "EXPIRED"}
            )
        return FailedPrecondition(f"{name} has not expired yet", reason="APPROVAL_PENDING")
    state = "" if row is None else str(row.state)
    reason = "APPROVAL_EXPIRED" if state == "EXPIRED" else "APPROVAL_ALREADY_DECIDED"
    return FailedPrecondition(f"{name} is already {state.lower()}", reason=reason, metadata={"state": state})


async def note_tickets(db: Database, run: RunRecord) -> RunRecord:
    """Fill in the run's tickets for a reader: each step's newest ticket, the ones the run waits for."""
    query = (
        select(approvals.c.approval_id, approvals.c.step_id, approvals.c.state)
        .where(approvals.c.run_id == run.run_id)
        .order_by(approvals.c.create_time, approvals.c.approval_id)
    )
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    newest = {r.step_id: f"approvals/{r.approval_id}" for r in rows}
    for record in run.steps:
        record.approval = newest.get(record.step_id, "")
    if run.state is RunState.WAITING:
        run.pending_approvals = [f"approvals/{r.approval_id}" for r in rows if r.state == "PENDING"]
    return run


async def cancel_waiting(db: Database, run: RunRecord, reason: str, principal: str) -> bool:
    """Cancel a WAITING run in one transaction; False when it was not waiting any more."""
    now = utcnow()
    error = error_json("CANCELLED", reason or "cancelled on request", "RUN_CANCELLED")
    async with db.begin() as conn:
        locked = (
            await conn.execute(
                update(runs)
                .where(runs.c.run_id == run.run_id, runs.c.state == RunState.WAITING.value)
                .values(
                    last_seq=runs.c.last_seq + 1,
                    state=RunState.CANCELLED.value,
                    error=error,
                    end_time=now,
                    cancel_requested=True,
                    cancel_reason=reason,
                )
                .returning(runs.c.last_seq)
            )
        ).first()
        if locked is None:
            return False
        await conn.execute(
            update(steps)
            .where(
                steps.c.run_id == run.run_id,
                steps.c.state.not_in([StepState.SUCCEEDED.value, StepState.FAILED.value]),
            )
            .values(state=StepState.SKIPPED.value)
        )
        await conn.execute(
            update(approvals)
            .where(approvals.c.run_id == run.run_id, approvals.c.state == "PENDING")
            .values(state="REJECTED", decided_by=principal, comment="the run was cancelled", decide_time=now)
        )
        await conn.execute(
            events.insert(),
            [
                {
                    "run_id": run.run_id,
                    "seq": int(locked.last_seq),
                    "type": EventType.RUN_CANCELLED.value,
                    "step_id": "",
                    "run_state": RunState.CANCELLED.value,
                    "data": {"error": error},
                    "create_time": now,
                }
            ],
        )
    return True
