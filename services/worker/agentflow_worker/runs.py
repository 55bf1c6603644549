"""Run lifecycle as domain operations: start (compile + persist + schedule), read, cancel, watch."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from agentflow_runtime import context
from agentflow_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from agentflow_runtime.names import RUN_ID, WORKFLOW_ID
from agentflow_runtime.protojson import utcnow

from agentflow_worker.budget import Budget, preflight
from agentflow_worker.hub import EventHub
from agentflow_worker.model import Event, Plan, RunRecord, RunState
from agentflow_worker.replay import ReplayReport, replay
from agentflow_worker.scheduler import Scheduler
from agentflow_worker.store import RunStore
from agentflow_worker.waiting import cancel_waiting, note_tickets

_RUN_NAME = re.compile(rf"runs/({RUN_ID.pattern})")
_WORKFLOW_NAME = re.compile(rf"workflows/{WORKFLOW_ID.pattern}")

WATCH_POLL_SECONDS = 0.5
"""How long a watcher waits for a push before reading the journal (runs executed by another worker)."""
WATCH_PAGE = 500

Compile = Callable[[str, int], Awaitable[Plan]]
"""Asks the planner for the plan of (workflow name, version)."""


def parse_run_name(name: str) -> str:
    """The run id of `runs/{run}`; InvalidArgument otherwise."""
    match = _RUN_NAME.fullmatch(name)
    if match is None:
        raise InvalidArgument(
            f"{name!r} is not a run name", reason="INVALID_NAME", violations=[("name", "must be runs/{run}")]
        )
    return match.group(1)


class Runs:
    """What RunService does, without the transport."""

    def __init__(self, store: RunStore, scheduler: Scheduler, hub: EventHub, compile_plan: Compile) -> None:
        self.store = store
        self.scheduler = scheduler
        self.hub = hub
        self.compile_plan = compile_plan

    async def start(
        self,
        tenant: str,
        workflow: str,
        version: int,
        run_input: dict[str, Any],
        labels: dict[str, str],
        request_id: str,
        budget: Budget | None = None,
    ) -> tuple[RunRecord, bool]:
        if not _WORKFLOW_NAME.fullmatch(workflow):
            raise InvalidArgument(
                f"{workflow!r} is not a workflow name",
                reason="INVALID_NAME",
                violations=[("workflow", "must be workflows/{workflow}")],
            )
        if request_id:
            existing = await self.store.find_by_request(tenant, request_id)
            if existing is not None:
                return existing, False
        plan = await self.compile_plan(workflow, version)
        preflight(budget, plan.cost_estimate)
        run = RunRecord(
            run_id=uuid.uuid4().hex,
            tenant=tenant,
            workflow=plan.workflow,
            workflow_version=plan.workflow_version,
            plan_hash=plan.plan_hash,
            plan=plan,
            state=RunState.PENDING,
            input=run_input,
            labels=labels,
            budget=budget.to_json() if budget is not None and budget.capped else None,
            create_time=utcnow(),
        )
        # Inserted already claimed by this worker when it has room: it executes the run from the record
        # in hand, with no claim transaction and no read back. When full, a poll claims it later.
        lease = self.scheduler.lease_for_new()
        run, created = await self.store.create(run, request_id or None, lease=lease)
        if created and lease is not None:
            self.scheduler.launch_claimed(run)
        return run, created

    async def get(self, tenant: str, name: str) -> RunRecord:
        run = await self.store.get(parse_run_name(name), tenant)
        if run is None:
            raise NotFound(f"{name} not found", reason="RUN_NOT_FOUND", metadata={"run": name})
        return await note_tickets(self.store.db, run)

    async def cancel(self, tenant: str, name: str, reason: str) -> RunRecord:
        run = await self.get(tenant, name)
        if run.state.final:
            raise FailedPrecondition(
                f"{name} already finished ({run.state.value})",
                reason="RUN_FINISHED",
                metadata={"run": name, "state": run.state.value},
            )
        await self.store.request_cancel(run.run_id, reason)
        # Nobody holds a waiting run: it is cancelled here, in one transaction (its open tickets close).
        # Tried whatever state was read: a run parked after that read is caught here, and one about to park
        # does not (`waiting.park` refuses a run whose cancellation was requested).
        if await cancel_waiting(self.store.db, run, reason, context.current().principal):
            await self.hub.notify(run.run_id)
            return await self.get(tenant, name)
        # An unclaimed run is cancelled here and now; a running one by its lease owner's heartbeat.
        await self.scheduler.submit(run.run_id)
        return await self.get(tenant, name)

    async def replay(self, tenant: str, name: str, version: int) -> ReplayReport:
        """Replay a finished run against the workflow as it is now (or `version`); calls nothing."""
        run = await self.get(tenant, name)
        if not run.state.final:
            raise FailedPrecondition(
                f"{name} has not finished ({run.state.value}); replay needs a complete journal",
                reason="RUN_NOT_FINISHED",
                metadata={"run": name, "state": run.state.value},
            )
        plan = await self.compile_plan(run.workflow, version)
        return replay(run, plan, await self.store.input_digests(run.run_id))

    async def watch(self, tenant: str, name: str, after_seq: int) -> AsyncIterator[Event]:
        """The run's events after `after_seq`, then each as it is journaled, until the run is final.

        Events of runs this worker executes are pushed (`EventHub`); the journal is read to catch up (on
        subscribing, on a gap, after a final event) and every `WATCH_POLL_SECONDS` without a push (a run
        executed by another worker).
        """
        run_id = parse_run_name(name)
        if await self.store.tenant_of(run_id) != tenant:
            raise NotFound(f"{name} not found", reason="RUN_NOT_FOUND", metadata={"run": name})
        if after_seq < 0:
            raise InvalidArgument("after_seq must not be negative", violations=[("after_seq", "negative")])
        seen = after_seq
        with self.hub.subscribe(run_id) as inbox:
            read = True
            while True:
                if read:
                    batch = await self.store.events_after(run_id, seen, WATCH_PAGE)
                    for event in batch:
                        yield event
                        seen = event.seq
                    if len(batch) == WATCH_PAGE:
                        continue
                    state = await self.store.run_state(run_id)
                    if state is None or (state[0].final and seen >= state[1]):
                        return
                    read = False
                try:
                    item = await asyncio.wait_for(inbox.get(), WATCH_POLL_SECONDS)
                except TimeoutError:
                    read = True
                    continue
                if item is None or item.seq > seen + 1:
                    read = True  # a bare wake-up, or events this inbox missed: the journal has them
                    continue
                if item.seq <= seen:
                    continue
                yield item
                seen = item.seq
                # After a final event, the journal confirms nothing follows before the stream ends.
                read = item.run_state.final
