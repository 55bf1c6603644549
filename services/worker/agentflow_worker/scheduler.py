"""Claims runs (new ones at once, orphaned ones by polling), heartbeats their leases, drains on stop.

Any number of workers may share one database. A run is executed only under its lease, taken by one
conditional UPDATE (`RunStore.claim`) and renewed every `min(lease/3, 1 s)`; every journal write checks
the lease in the same transaction, so a worker that lost its lease cannot write. A worker killed with
SIGKILL stops renewing; after `lease_seconds` another worker's poll (every `poll_seconds`) claims the run
and resumes it from the journal, reusing the interrupted attempt's idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable

from agentflow_runtime import logs

from agentflow_worker.calls import StepCalls
from agentflow_worker.engine import LeaseLost, RunEngine
from agentflow_worker.gate import ApprovalGate
from agentflow_worker.model import RunState
from agentflow_worker.store import RunStore

log = logging.getLogger("agentflow.worker.scheduler")


class Scheduler:
    """Runs claimed runs as tasks, at most `concurrency` at once, each under a renewed lease."""

    def __init__(
        self,
        store: RunStore,
        calls: StepCalls,
        notify: Callable[[str], Awaitable[None]],
        *,
        lease_seconds: float = 15.0,
        poll_seconds: float = 1.0,
        concurrency: int = 64,
        on_finish: Callable[[str, RunState], None] | None = None,
        gate: ApprovalGate | None = None,
    ) -> None:
        self.store = store
        self.calls = calls
        self.notify = notify
        # The pid says which process holds a lease (operators, the chaos test); the random part keeps
        # owners unique across restarts and hosts.
        self.owner = f"worker-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.concurrency = concurrency
        self.on_finish = on_finish
        self.gate = gate
        self.active: dict[str, asyncio.Task[None]] = {}
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        """Stop claiming; cancel in-flight runs and release their leases so another worker resumes them."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        tasks = list(self.active.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def submit(self, run_id: str) -> bool:
        """Try to claim and start a run now (the fast path after StartRun)."""
        if run_id in self.active or len(self.active) >= self.concurrency:
            return False
        if not await self.store.claim(run_id, self.owner, self.lease_seconds):
            return False
        self._launch(run_id)
        return True

    def _launch(self, run_id: str) -> None:
        """Execute a run this worker has just claimed (unless it is already executing it)."""
        if run_id not in self.active:
            self.active[run_id] = asyncio.get_running_loop().create_task(self._execute(run_id))

    async def _poll(self) -> None:
        while True:
            try:
                free = self.concurrency - len(self.active)
                if free > 0:
                    for run_id in await self.store.claim_next(self.owner, self.lease_seconds, free):
                        self._launch(run_id)
            except Exception:
                log.exception("claim poll failed")
            await asyncio.sleep(self.poll_seconds)

    async def _execute(self, run_id: str) -> None:
        token = logs.run_id_var.set(run_id)
        engine = RunEngine(self.store, self.calls, self.owner, self.notify, gate=self.gate)
        heartbeat: asyncio.Task[None] | None = None
        try:
            run = await self.store.get(run_id)
            if run is None or run.state.final:
                return
            work = asyncio.current_task()
            assert work is not None
            cancel_seen = asyncio.Event()
            heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(run_id, work, cancel_seen))
            if run.cancel_requested:
                cancel_seen.set()  # already handled here: the heartbeat only renews
                state = await engine.cancel(run, run.cancel_reason)
            else:
                try:
                    state = await engine.execute(run)
                except asyncio.CancelledError:
                    if not cancel_seen.is_set():
                        raise
                    fresh = await self.store.get(run_id)
                    assert fresh is not None
                    if fresh.state.final:
                        # The run finished before the cancel request was seen: keep its outcome.
                        state = fresh.state
                    else:
                        state = await engine.cancel(fresh, fresh.cancel_reason)
            log.info("run finished", extra={"fields": {"state": state.value}})
            if self.on_finish is not None:
                self.on_finish(run_id, state)
        except LeaseLost:
            log.warning("lease lost; another worker continues the run")
        except asyncio.CancelledError:
            log.info("run interrupted; lease released for another worker")
        except Exception:
            log.exception("run execution crashed; lease released for another worker")
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            await asyncio.shield(self.store.release(run_id, self.owner))
            self.active.pop(run_id, None)
            logs.run_id_var.reset(token)

    async def _heartbeat(self, run_id: str, work: asyncio.Task[None], cancel_seen: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(min(self.lease_seconds / 3, 1.0))
            ours, cancel = await self.store.renew(run_id, self.owner, self.lease_seconds)
            if not ours:
                # Another worker owns the run now and resumes its calls under the same keys: leave them be.
                work.cancel()
                return
            if cancel and not cancel_seen.is_set():
                # The run is cancelled: cancel the local calls (so no result lands after the request was
                # seen); `RunEngine.cancel` then stops them at their callees while this loop keeps the
                # lease renewed.
                cancel_seen.set()
                work.cancel()
