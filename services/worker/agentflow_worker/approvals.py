"""Approval tickets: listed, and decided once by people with a role the ticket's rule names.

A decision is one transaction (`waiting.settle`): the ticket moves only while it is still pending and
unexpired, and the run it holds goes from WAITING back to PENDING when it was the run's last open ticket.
Deciding a decided or expired ticket is FAILED_PRECONDITION and resumes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from agentflow_runtime.db import Database
from agentflow_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from agentflow_runtime.names import RUN_ID
from agentflow_runtime.protojson import utcnow
from sqlalchemy import or_, select

from agentflow_worker.policy import APPROVER_ROLES
from agentflow_worker.tables import approvals
from agentflow_worker.waiting import Settled, settle

DECIDING_ROLES = frozenset(APPROVER_ROLES)
"""Who may decide a ticket whose rule names no roles."""
_NAME = re.compile(rf"approvals/({RUN_ID.pattern})")
_RUN = re.compile(rf"runs/({RUN_ID.pattern})")

OnSettled = Callable[[Settled], Awaitable[None]]


def _parse(name: str) -> str:
    match = _NAME.fullmatch(name)
    if match is None:
        raise InvalidArgument(
            f"{name!r} is not an approval name", violations=[("name", "must be approvals/{approval}")]
        )
    return match.group(1)


async def _nothing(settled: Settled) -> None:
    return None


class Approvals:
    """Ticket reads and decisions. Tickets expire by TTL: an expired ticket cannot be decided."""

    def __init__(self, db: Database, on_settled: OnSettled = _nothing) -> None:
        self.db = db
        self.on_settled = on_settled
        """Told of each decision (after commit): wakes watchers, claims a resumed run at once."""

    async def get(self, tenant: str, name: str) -> dict[str, Any]:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(approvals).where(
                        approvals.c.approval_id == _parse(name), approvals.c.tenant == tenant
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"{name} not found", reason="APPROVAL_NOT_FOUND")
        return self._current(dict(row._mapping))

    async def list_tickets(
        self, tenant: str, offset: int, limit: int, state: str = "", run: str = ""
    ) -> list[dict[str, Any]]:
        query = select(approvals).where(approvals.c.tenant == tenant)
        if run:
            match = _RUN.fullmatch(run)
            if match is None:
                raise InvalidArgument(
                    f"{run!r} is not a run name", violations=[("run", "must be runs/{run}")]
                )
            query = query.where(approvals.c.run_id == match.group(1))
        now = utcnow()
        if state == "EXPIRED":
            query = query.where(
                or_(
                    approvals.c.state == "EXPIRED",
                    (approvals.c.state == "PENDING") & (approvals.c.expire_time <= now),
                )
            )
        elif state == "PENDING":
            query = query.where(
                approvals.c.state == "PENDING",
                or_(approvals.c.expire_time.is_(None), approvals.c.expire_time > now),
            )
        elif state:
            query = query.where(approvals.c.state == state)
        query = (
            query.order_by(approvals.c.create_time.desc(), approvals.c.approval_id)
            .offset(offset)
            .limit(limit)
        )
        async with self.db.connect() as conn:
            return [self._current(dict(r._mapping)) for r in (await conn.execute(query)).all()]

    async def decide(
        self, tenant: str, role: str, principal: str, name: str, approve: bool, comment: str
    ) -> dict[str, Any]:
        ticket = await self.get(tenant, name)
        allowed = tuple(ticket.get("approver_roles") or ()) or tuple(sorted(DECIDING_ROLES))
        if role not in allowed:
            raise PermissionDenied(
                f"role {role or '(none)'!r} may not decide {name} (rule {ticket.get('rule') or '-'} "
                f"allows: {', '.join(allowed)})",
                reason="ROLE_NOT_ALLOWED",
                metadata={"role": role, "approver_roles": ",".join(allowed)},
            )
        if ticket["state"] != "PENDING":
            state = ticket["state"]
            raise FailedPrecondition(
                f"{name} is already {state.lower()}; it cannot be decided again",
                reason="APPROVAL_EXPIRED" if state == "EXPIRED" else "APPROVAL_ALREADY_DECIDED",
                metadata={"state": state},
            )
        settled = await settle(
            self.db, ticket["approval_id"], "APPROVED" if approve else "REJECTED", principal, comment
        )
        await self.on_settled(settled)
        return await self.get(tenant, name)

    @staticmethod
    def _current(row: dict[str, Any]) -> dict[str, Any]:
        """The ticket as callers see it: a pending ticket past its expiry is EXPIRED (the sweeper will
        apply its on-expiry action shortly)."""
        if row["state"] == "PENDING" and row["expire_time"] is not None and row["expire_time"] <= utcnow():
            row["state"] = "EXPIRED"
        return row
