"""Claims runs (new ones at once, orphaned ones by polling), keeps their leases, drains on stop.

Any number of workers may share one database. A run is executed only under its lease: a run started
through this worker is inserted already claimed by it (`Scheduler.lease_for_new`), others are taken by
one conditional UPDATE (`RunStore.claim` / `claim_next`). Every journal write checks the lease in its
own runs UPDATE (`lease_owner = me AND lease_expires > now`) and renews it, so a run whose steps are
short needs no other lease write; the heartbeat (every `min(lease/3, 1 s)`) renews it only when no
transition did in the last interval (a long step), and otherwise just reads the cancel flag. A worker
killed with SIGKILL stops renewing; after `lease_seconds` another worker's poll (every `poll_seconds`, or
at once when a local run finishes and frees a slot) claims the run and resumes it from the journal,
reusing the interrupted attempt's idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from agentflow_runtime import logs

from agentflow_worker.calls import StepCalls
from agentflow_worker.engine import JournalWriteFailed, LeaseLost, RunEngine
from agentflow_worker.gate import ApprovalGate
from agentflow_worker.model import Event, RunRecord, RunState
from agentflow_worker.store import RunStore

log = logging.getLogger("agentflow.worker.scheduler")


class Scheduler:
    """Runs claimed runs as tasks, at most `concurrency` at once, each under a renewed lease."""

    def __init__(
        self,
        store: RunStore,
        calls: StepCalls,
        notify: Callable[[str, Sequence[Event]], Awaitable[None]],
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
        self._let_go: dict[str, int] = {}
        """Runs whose execution failed here (journal write, crash), by failures in a row: the backoff."""
        self._poller: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

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

    def lease_for_new(self) -> tuple[str, float] | None:
        """(owner, seconds) to insert a new run already claimed by this worker, or None when it is full
        (the run then waits for a poll, here or at another worker)."""
        if len(self.active) >= self.concurrency:
            return None
        return self.owner, self.lease_seconds

    def launch_claimed(self, run: RunRecord) -> None:
        """Execute a run inserted with `lease_for_new`'s lease, from the record in hand (no read back)."""
        self._launch(run.run_id, run)

    def _launch(self, run_id: str, run: RunRecord | None = None) -> None:
        """Execute a run this worker has just claimed (unless it is already executing it)."""
        if run_id not in self.active:
            self.active[run_id] = asyncio.get_running_loop().create_task(self._execute(run_id, run))

    async def _poll(self) -> None:
        while True:
            try:
                free = self.concurrency - len(self.active)
                if free > 0:
                    for run_id in await self.store.claim_next(self.owner, self.lease_seconds, free):
                        self._launch(run_id)
            except Exception:
                log.exception("claim poll failed")
            # Woken early when a local run finishes while the worker was full (a queued run may wait).
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def _execute(self, run_id: str, run: RunRecord | None = None) -> None:
        token = logs.run_id_var.set(run_id)
        engine = RunEngine(
            self.store, self.calls, self.owner, self.notify, gate=self.gate, lease_seconds=self.lease_seconds
        )
        heartbeat: asyncio.Task[None] | None = None
        full = len(self.active) >= self.concurrency
        release = True
        try:
            if run is None:
                run = await self.store.get(run_id)
            if run is None or run.state.final:
                return
            work = asyncio.current_task()
            assert work is not None
            cancel_seen = asyncio.Event()
            heartbeat = asyncio.get_running_loop().create_task(
                self._heartbeat(run_id, work, cancel_seen, engine)
            )
            if run.cancel_requested:
                cancel_seen.set()  # already handled here: the heartbeat only renews
                state = await engine.cancel(run, run.cancel_reason)
            else:
                try:
                    state = await engine.execute(run)
                except asyncio.CancelledError:
                    if not cancel_seen.is_set():
                        raise
                    state = await self._cancel_mid_execution(engine, run_id)
            log.info("run finished", extra={"fields": {"state": state.value}})
            self._let_go.pop(run_id, None)
            if self.on_finish is not None:
                self.on_finish(run_id, state)
        except LeaseLost:
            log.warning("run let go (LeaseLost); another worker resumes it from its journal")
        except asyncio.CancelledError:
            # Draining (or the lease was lost): keep the results buffered for the next transition, if the
            # lease still allows it, so the worker that resumes the run does not call their steps again.
            with contextlib.suppress(Exception):
                await engine.flush()
            log.info("run interrupted; lease released for another worker")
        except Exception as exc:
            # A failed journal write (JournalWriteFailed) or a crash is not an outcome of the run: a fresh
            # engine (here or elsewhere) resumes it from the journal under the same idempotency keys. Let go
            # at once the first time (a blip); again and again, the lease lapses instead, so a write that
            # always fails is retried once a lease, not in a tight loop.
            release = self._backoff(run_id)
            crashed = not isinstance(exc, JournalWriteFailed)
            log.warning("run let go (%s); it resumes from its journal", type(exc).__name__, exc_info=crashed)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            if not engine.released and release:  # the final transition gives the lease up itself
                await self._release(run_id)
            self.active.pop(run_id, None)
            if full:
                self._wake.set()
            logs.run_id_var.reset(token)

    async def _cancel_mid_execution(self, engine: RunEngine, run_id: str) -> RunState:
        """The run's cancellation interrupted its execution: cancel it, unless it finished meanwhile."""
        await engine.flush()  # results buffered for the next transition are kept
        fresh = await self.store.get(run_id)
        assert fresh is not None
        if fresh.state.final:
            # The run finished before the cancel request was seen: keep its outcome.
            return fresh.state
        return await engine.cancel(fresh, fresh.cancel_reason)

    def _backoff(self, run_id: str) -> bool:
        """Count a failed execution of `run_id` here; whether to release its lease now (the first time)."""
        failures = self._let_go.get(run_id, 0) + 1
        self._let_go[run_id] = failures
        if failures > 1:
            log.warning(
                "run failed to execute again; its lease lapses before it is retried",
                extra={"fields": {"failures": failures, "lease_seconds": self.lease_seconds}},
            )
        return failures == 1

    async def _release(self, run_id: str) -> None:
        try:
            await asyncio.shield(self.store.release(run_id, self.owner))
        except Exception:
            # The database still fails (a journal write just did): the lease lapses instead, and the run
            # is claimed then; the run stays out of `active` either way.
            log.warning("could not release the lease; it lapses", exc_info=True)

    async def _heartbeat(
        self, run_id: str, work: asyncio.Task[None], cancel_seen: asyncio.Event, engine: RunEngine
    ) -> None:
        interval = min(self.lease_seconds / 3, 1.0)
        while True:
            await asyncio.sleep(interval)
            if engine.released:
                return
            if time.monotonic() - engine.last_write < interval:
                # A transition renewed the lease within the interval: only look for a cancel request.
                ours, cancel = await self.store.lease_status(run_id, self.owner)
            else:
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
