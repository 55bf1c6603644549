"""Approval tickets: listed and decided by people with the right role; a decision is made once."""

from __future__ import annotations

import re
from typing import Any

from agentflow_runtime.db import Database
from agentflow_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from agentflow_runtime.names import RUN_ID
from agentflow_runtime.protojson import utcnow
from sqlalchemy import or_, select, update

from agentflow_worker.tables import approvals

DECIDING_ROLES = frozenset({"admin", "developer"})
_NAME = re.compile(rf"approvals/({RUN_ID.pattern})")


def _parse(name: str) -> str:
    match = _NAME.fullmatch(name)
    if match is None:
        raise InvalidArgument(
            f"{name!r} is not an approval name", violations=[("name", "must be approvals/{approval}")]
        )
    return match.group(1)


class Approvals:
    """Ticket storage and decisions. Tickets expire by TTL: an expired ticket cannot be decided."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
        self, tenant: str, offset: int, limit: int, state: str = ""
    ) -> list[dict[str, Any]]:
        query = select(approvals).where(approvals.c.tenant == tenant)
        now = utcnow()
        if state == "EXPIRED":
            query = query.where(
                approvals.c.state == "PENDING",
                approvals.c.expire_time.is_not(None),
                approvals.c.expire_time <= now,
            )
        elif state == "PENDING":
            query = query.where(
                approvals.c.state == "PENDING",
                or_(approvals.c.expire_time.is_(None), approvals.c.expire_time > now),
            )
        elif state:
            query = query.where(approvals.c.state == state)
        query = query.order_by(approvals.c.create_time.desc()).offset(offset).limit(limit)
        async with self.db.connect() as conn:
            return [self._current(dict(r._mapping)) for r in (await conn.execute(query)).all()]

    async def decide(
        self, tenant: str, role: str, principal: str, name: str, approve: bool, comment: str
    ) -> dict[str, Any]:
        if role not in DECIDING_ROLES:
            raise PermissionDenied(
                f"role {role or '(none)'!r} may not decide approvals",
                reason="ROLE_NOT_ALLOWED",
                metadata={"role": role},
            )
        ticket = await self.get(tenant, name)
        if ticket["state"] != "PENDING":
            raise FailedPrecondition(
                f"{name} is already {ticket['state'].lower()}",
                reason="APPROVAL_ALREADY_DECIDED" if ticket["state"] != "EXPIRED" else "APPROVAL_EXPIRED",
                metadata={"state": ticket["state"]},
            )
        now = utcnow()
        async with self.db.begin() as conn:
            result = await conn.execute(
                update(approvals)
                .where(
                    approvals.c.approval_id == ticket["approval_id"],
                    approvals.c.state == "PENDING",
                    or_(approvals.c.expire_time.is_(None), approvals.c.expire_time > now),
                )
                .values(
                    state="APPROVED" if approve else "REJECTED",
                    decided_by=principal,
                    comment=comment,
                    decide_time=now,
                )
            )
            if result.rowcount != 1:
                raise FailedPrecondition(
                    f"{name} was decided concurrently", reason="APPROVAL_ALREADY_DECIDED"
                )
        return await self.get(tenant, name)

    @staticmethod
    def _current(row: dict[str, Any]) -> dict[str, Any]:
        for key in ("create_time", "expire_time", "decide_time"):
            row[key] = row[key]
        if row["state"] == "PENDING" and row["expire_time"] is not None and row["expire_time"] <= utcnow():
            row["state"] = "EXPIRED"
        return row
