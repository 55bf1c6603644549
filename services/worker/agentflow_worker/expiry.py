"""Expires approval tickets past their TTL, once each, and resumes the runs they held.

Every worker runs a sweeper; they may race for a ticket, and the conditional update in `waiting.settle`
lets exactly one of them expire it (the others get FAILED_PRECONDITION and move on). The run resumes like
after a decision; the step then applies the ticket's `on_expiry` (`gate.ApprovalGate.check`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agentflow_runtime import context
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.db import Database
from agentflow_runtime.errors import FailedPrecondition
from agentflow_runtime.protojson import utcnow
from sqlalchemy import select

from agentflow_worker.approvals import OnSettled
from agentflow_worker.tables import approvals
from agentflow_worker.waiting import settle

log = logging.getLogger("agentflow.worker.expiry")

__all__ = ["ExpirySweeper"]


class ExpirySweeper:
    """Looks for expired pending tickets every `interval` seconds (one indexed query)."""

    def __init__(
        self,
        db: Database,
        on_settled: OnSettled,
        audit: AuditSink | None = None,
        *,
        interval: float = 1.0,
        batch: int = 100,
    ) -> None:
        self.db = db
        self.on_settled = on_settled
        self.audit = audit
        self.interval = interval
        self.batch = batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("approval expiry sweep failed")
            await asyncio.sleep(self.interval)

    async def sweep(self) -> int:
        """Expire what is due now; how many tickets this call expired."""
        query = (
            select(approvals.c.approval_id, approvals.c.tenant, approvals.c.run_id, approvals.c.rule)
            .where(approvals.c.state == "PENDING", approvals.c.expire_time <= utcnow())
            .order_by(approvals.c.expire_time)
            .limit(self.batch)
        )
        async with self.db.connect() as conn:
            due = (await conn.execute(query)).all()
        expired = 0
        for row in due:
            try:
                settled = await settle(
                    self.db, row.approval_id, "EXPIRED", "", "expired undecided", expiring=True
                )
            except FailedPrecondition:
                continue  # decided or expired by someone else meanwhile
            expired += 1
            if self.audit is not None:
                with context.bound(context.CallContext(tenant=row.tenant, caller="worker")):
                    self.audit.record(
                        "approval.expire",
                        f"approvals/{row.approval_id}",
                        details={"run": f"runs/{row.run_id}", "rule": row.rule, "resumed": settled.resumed},
                    )
            await self.on_settled(settled)
        return expired
