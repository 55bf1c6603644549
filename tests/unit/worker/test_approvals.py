"""Approvals: only deciding roles decide, once, and never after the ticket expired."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from agentflow_runtime.db import Database
from agentflow_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from agentflow_runtime.protojson import utcnow
from agentflow_worker.approvals import Approvals
from agentflow_worker.store import RunStore
from agentflow_worker.tables import approvals, runs
from sqlalchemy import update

from .conftest import create_run, plan_of, step


async def insert_ticket(db: Database, tenant: str = "acme", expires_in: float | None = 3600) -> str:
    """A pending ticket holding a WAITING run of its own."""
    run = await create_run(RunStore(db), plan_of(step("deploy")), tenant=tenant)
    approval_id = uuid.uuid4().hex
    now = utcnow()
    async with db.begin() as conn:
        await conn.execute(update(runs).where(runs.c.run_id == run.run_id).values(state="WAITING"))
        await conn.execute(
            approvals.insert().values(
                approval_id=approval_id,
                tenant=tenant,
                run_id=run.run_id,
                step_id="deploy",
                state="PENDING",
                request={"tool": "deploy", "why": "ship it"},
                decided_by="",
                comment="",
                create_time=now,
                expire_time=None if expires_in is None else now + timedelta(seconds=expires_in),
                call_key=f"{run.run_id}/deploy/1",
                rule="ops/deploys",
                approver_roles=["admin", "developer"],
                on_expiry="fail",
                resume_state="PENDING",
            )
        )
    return f"approvals/{approval_id}"


async def test_viewer_may_not_decide(db: Database) -> None:
    name = await insert_ticket(db)
    with pytest.raises(PermissionDenied) as caught:
        await Approvals(db).decide("acme", "viewer", "vic", name, True, "")
    assert caught.value.reason == "ROLE_NOT_ALLOWED"
    assert (await Approvals(db).get("acme", name))["state"] == "PENDING"


async def test_approve_then_decide_again_is_refused(db: Database) -> None:
    book = Approvals(db)
    name = await insert_ticket(db)
    ticket = await book.decide("acme", "developer", "dana", name, True, "looks fine")
    assert ticket["state"] == "APPROVED"
    assert ticket["decided_by"] == "dana"
    assert ticket["comment"] == "looks fine"
    assert ticket["decide_time"] is not None and ticket["decide_time"].tzinfo is not None
    assert ticket["request"] == {"tool": "deploy", "why": "ship it"}

    with pytest.raises(FailedPrecondition) as caught:
        await book.decide("acme", "admin", "ada", name, False, "no")
    assert caught.value.reason == "APPROVAL_ALREADY_DECIDED"
    assert (await book.get("acme", name))["decided_by"] == "dana"


async def test_reject(db: Database) -> None:
    name = await insert_ticket(db, expires_in=None)
    ticket = await Approvals(db).decide("acme", "admin", "ada", name, False, "not today")
    assert ticket["state"] == "REJECTED"


async def test_expired_ticket_cannot_be_decided(db: Database) -> None:
    book = Approvals(db)
    name = await insert_ticket(db, expires_in=-1)
    assert (await book.get("acme", name))["state"] == "EXPIRED"
    with pytest.raises(FailedPrecondition) as caught:
        await book.decide("acme", "admin", "ada", name, True, "")
    assert caught.value.reason == "APPROVAL_EXPIRED"


async def test_other_tenant_and_bad_names(db: Database) -> None:
    book = Approvals(db)
    name = await insert_ticket(db, tenant="globex")
    with pytest.raises(NotFound):
        await book.get("acme", name)
    with pytest.raises(NotFound):
        await book.decide("acme", "admin", "ada", name, True, "")
    with pytest.raises(InvalidArgument):
        await book.get("acme", "tickets/1")


async def test_list_tickets_by_tenant_and_stored_state(db: Database) -> None:
    book = Approvals(db)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    pending = await insert_ticket(db, tenant)
    decided = await insert_ticket(db, tenant)
    await book.decide(tenant, "admin", "ada", decided, True, "")
    every = await book.list_tickets(tenant, 0, 10)
    assert sorted(_name(t) for t in every) == sorted([pending, decided])
    assert [_name(t) for t in await book.list_tickets(tenant, 0, 10, "APPROVED")] == [decided]
    assert [_name(t) for t in await book.list_tickets(tenant, 0, 10, "PENDING")] == [pending]


async def test_list_tickets_filters_on_the_state_it_reports(db: Database) -> None:
    book = Approvals(db)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    expired = await insert_ticket(db, tenant, expires_in=-1)
    pending = await insert_ticket(db, tenant)
    assert [_name(t) for t in await book.list_tickets(tenant, 0, 10, "PENDING")] == [pending]
    assert [_name(t) for t in await book.list_tickets(tenant, 0, 10, "EXPIRED")] == [expired]


def _name(ticket: dict[str, Any]) -> str:
    return f"approvals/{ticket['approval_id']}"
