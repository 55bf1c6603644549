"""Executes one run under its lease: walks the plan graph, journals each result before it counts.

Durability rules (ARCHITECTURE.md): a journaled step is never recomputed — on resume the engine starts from
the steps without a result; every transition is written with its event in one transaction, and only while
this worker still holds the lease.

Each step runs as numbered attempts under its retry policy (`retry`). The attempt number is journaled
before the call and is part of the call's idempotency key (see `calls.idempotency_key`): resuming a step
interrupted mid-call reuses it, a deliberate retry after a failed attempt increments it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentflow_runtime import templates
from agentflow_runtime.protojson import utcnow

from agentflow_worker.agent import AGENT_EVENTS, run_agent_step, stop_agent_calls
from agentflow_worker.budget import SPENDING_KINDS, Budget, spent_usd
from agentflow_worker.calls import StepCalls, StepFailed, StepResult
from agentflow_worker.gate import ApprovalGate, AwaitingApproval, ParkRequest, step_call
from agentflow_worker.inputs import input_digest, scope, tolerated_failures
from agentflow_worker.model import (
    Event,
    EventType,
    PlanStep,
    RunRecord,
    RunState,
    StepState,
    error_json,
)
from agentflow_worker.retry import RetryPolicy
from agentflow_worker.store import RunStore
from agentflow_worker.value_step import run_value_step
from agentflow_worker.waiting import park

log = logging.getLogger("agentflow.worker.engine")

STOP_TIMEOUT = 5.0
"""Seconds to wait for a callee to confirm it stopped a call (best effort)."""


class LeaseLost(Exception):
    """Another worker holds the run now; stop without writing."""


class JournalWriteFailed(Exception):
    """A journal write raised (a connection reset, a busy database): not the outcome of any step.

    Whether the transaction committed is unknown, so this engine instance writes nothing more (its event
    numbers and buffered results can no longer be trusted); the run is let go and resumed from the
    journal by a fresh engine, under the same idempotency keys.
    """


class RunEngine:
    """Drives one run from its journal to a final state."""

    def __init__(
        self,
        store: RunStore,
        calls: StepCalls,
        owner: str,
        notify: Any,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        gate: ApprovalGate | None = None,
        lease_seconds: float | None = None,
    ) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        """Each transition renews the lease for this long (None: the caller renews it)."""
        self.released = False
        """The final transition gave the lease up."""
        self.last_write = 0.0
        """`time.monotonic()` of the last transition (it renewed the lease)."""
        self._pending: list[_Pending] = []
        self._broken: str | None = None
        """Why a journal write failed; every later write then fails the same way."""
        self.calls = calls
        self.owner = owner
        self._notify = notify
        self._sleep = sleep
        self._rand = rand
        self.gate = gate
        self._lock = asyncio.Lock()
        self._seq = 0
        self._state = RunState.PENDING

    async def execute(self, run: RunRecord) -> RunState:
        """Run to completion (or cancellation); returns the final state."""
        self._load(run)
        if run.state is RunState.PENDING:
            await self._write(
                run,
                EventType.RUN_STARTED,
                "",
                {},
                run_values={"state": RunState.RUNNING.value},
                new_state=RunState.RUNNING,
                defer=True,
            )
        # Skipped steps (a false `when`) are settled too: their output is null; so are failed steps whose
        # plan says `on_error: continue`.
        tolerated = tolerated_failures(run)
        outputs = {
            s.step_id: s.output
            for s in run.steps
            if s.state in (StepState.SUCCEEDED, StepState.SKIPPED) or s.step_id in tolerated
        }
        failed = next(
            (s for s in run.steps if s.state is StepState.FAILED and s.step_id not in tolerated), None
        )
        if failed is not None:
            return await self._finish(run, RunState.FAILED, error=failed.error)
        try:
            parked = await self._walk(run, outputs)
        except StepFailed as exc:
            return await self._finish(run, RunState.FAILED, error=exc.error)
        if parked:
            return await self._park(run, parked)
        try:
            output = self._run_output(run, outputs)
        except templates.TemplateError as exc:
            return await self._finish(
                run,
                RunState.FAILED,
                error=error_json("INVALID_ARGUMENT", f"run output: {exc}", "OUTPUT_TEMPLATE"),
            )
        return await self._finish(run, RunState.SUCCEEDED, output=output)

    def _load(self, run: RunRecord) -> None:
        self._seq = run.last_seq
        self._state = run.state
        self._pending = []

    async def cancel(self, run: RunRecord, reason: str) -> RunState:
        """Stop the calls of steps the journal shows RUNNING, then record the cancellation (steps not
        finished are skipped).

        `run` is read after the local calls were cancelled (or after their worker died), so RUNNING steps
        are exactly the calls that may still be running at a callee: keyed tool executions outlive their
        caller on purpose, so each gets an explicit stop (CancelToolExecution) under its journaled attempt.
        This also reaches the tools of a worker that crashed before the cancel request was seen.
        """
        self._load(run)
        plan = {s.id: s for s in run.plan.steps}
        running = [
            (plan[r.step_id], r.attempts)
            for r in run.steps
            if r.state is StepState.RUNNING and r.attempts > 0 and r.step_id in plan
        ]
        # Params unrendered: what a stop needs (the tool name) is a literal the planner validated.
        await asyncio.gather(*(self._stop_call(run, s, s.params, a) for s, a in running))
        return await self._finish(
            run,
            RunState.CANCELLED,
            error=error_json("CANCELLED", reason or "cancelled on request", "RUN_CANCELLED"),
        )

    async def _walk(self, run: RunRecord, outputs: dict[str, Any]) -> list[ParkRequest]:
        """Run what can run; the calls left waiting for approval (nothing else could go on)."""
        pending = {s.id: s for s in run.plan.steps if s.id not in outputs}
        running: dict[asyncio.Task[StepResult], PlanStep] = {}
        failure: StepFailed | None = None
        spend = _Spend(run)
        skipped = {s.step_id for s in run.steps if s.state is StepState.SKIPPED}
        parked: list[ParkRequest] = []
        while (pending or running) and failure is None:
            try:
                # Inside the try: a lease lost (or a journal write failed) while starting or skipping a
                # step reaches the calls already in flight too.
                launched, failure = await self._start_ready(run, pending, running, outputs, skipped)
                if failure is not None:
                    break  # in-flight siblings finish and are journaled below
                if not running:
                    if not pending or parked:
                        break
                    raise StepFailed(
                        error_json("FAILED_PRECONDITION", "plan has unreachable steps", "PLAN_STUCK")
                    )
                if not launched:
                    # Nothing starts now that would carry a buffered result into the journal: write it
                    # before waiting (a result is never left unjournaled while the run waits).
                    await self.flush()
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                # Cancellation (run cancelled, lease lost, shutdown) reaches every in-flight call.
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                raise
            for task in done:
                step = running.pop(task)
                exc = task.exception()
                if exc is None:
                    outputs[step.id] = task.result().output
                    spend.add(step, task.result())
                    if pending and (exhausted := spend.exhausted()) is not None:
                        # Clean stop: no further step starts; in-flight ones finish and are journaled.
                        failure = failure or StepFailed(exhausted)
                elif isinstance(exc, StepFailed):
                    failure = failure or _unless_tolerated(run, step, exc, outputs)
                elif isinstance(exc, AwaitingApproval):
                    parked.append(exc.request)
                else:
                    # Lease lost, a journal write failed, or a crash: no sibling call may outlive this walk.
                    for other in running:
                        other.cancel()
                    await asyncio.gather(*running, return_exceptions=True)
                    raise exc
        if running:
            # A sibling failed: let in-flight steps finish and journal; their results stay useful on replay.
            results = await asyncio.gather(*running, return_exceptions=True)
            for result in results:
                if isinstance(result, LeaseLost | JournalWriteFailed | asyncio.CancelledError):
                    raise result
        if failure is not None:
            raise failure
        return parked

    async def _start_ready(
        self,
        run: RunRecord,
        pending: dict[str, PlanStep],
        running: dict[asyncio.Task[StepResult], PlanStep],
        outputs: dict[str, Any],
        skipped: set[str],
    ) -> tuple[bool, StepFailed | None]:
        """Start (or skip) every step whose needs are settled: whether any step was started, and the
        failure of a step whose condition could not be evaluated (None when its plan tolerates it)."""
        launched = False
        ready = [s for s in pending.values() if all(n in outputs for n in s.needs)]
        while ready:  # a skip (or a tolerated failure) can make further steps ready at once
            for step in ready:
                del pending[step.id]
                try:
                    reason = await self._skip_reason(run, step, outputs, skipped)
                except StepFailed as exc:
                    failure = _unless_tolerated(run, step, exc, outputs)
                    if failure is not None:
                        return launched, failure
                    continue
                if reason is None:
                    running[asyncio.create_task(self._step(run, step, outputs))] = step
                    launched = True
                    continue
                await self._skip(run, step, reason)
                skipped.add(step.id)
                outputs[step.id] = None
            ready = [s for s in pending.values() if all(n in outputs for n in s.needs)]
        return launched, None

    async def _skip_reason(
        self, run: RunRecord, step: PlanStep, outputs: dict[str, Any], skipped: set[str]
    ) -> str | None:
        """Why a ready step does not run (a skipped need, a false `when`), or None when it runs."""
        gone = sorted(n for n in step.needs if n in skipped)
        if gone and (step.params.get("join") != "any" or len(gone) == len(step.needs)):
            return f"needs skipped step {gone[0]}"
        if "when" not in step.params:
            return None
        try:
            value = templates.render(step.params["when"], scope(run, outputs))
        except templates.TemplateError as exc:
            error = error_json("INVALID_ARGUMENT", f"step {step.id} when: {exc}", "TEMPLATE_ERROR")
            await self._step_failed(run, step, error, 0)
            raise StepFailed(error) from exc
        return None if _truthy(value) else "condition is false"

    async def _skip(self, run: RunRecord, step: PlanStep, reason: str) -> None:
        await self._write(
            run,
            EventType.STEP_SKIPPED,
            step.id,
            {"reason": reason},
            step_values={step.id: {"state": StepState.SKIPPED.value, "end_time": utcnow()}},
        )

    async def _step(self, run: RunRecord, step: PlanStep, outputs: dict[str, Any]) -> StepResult:
        """Attempts of one step until one succeeds or the retry policy gives up.

        The attempt number is journaled (STEP_STARTED) before the call and keys it (`idempotency_key`).
        A step found RUNNING was interrupted mid-call by a crash: the same attempt is resumed, with the same
        key, so the callee recognises it. A step found PENDING after a failed attempt was waiting to retry:
        the next attempt starts at once (the backoff is not persisted; the lease expiry that let this
        worker take the run over has already delayed it).
        """
        record = next((s for s in run.steps if s.step_id == step.id), None)
        attempts = record.attempts if record is not None else 0
        resumed = record is not None and record.state is StepState.RUNNING and attempts > 0
        attempt = attempts if resumed else attempts + 1
        policy = RetryPolicy.from_params(step.params.get("retry"))
        while True:
            if not resumed:
                await self._gate_step(run, step, outputs, attempt)
            values: dict[str, Any] = {"state": StepState.RUNNING.value, "attempts": attempt}
            if not resumed:
                values["start_time"] = utcnow()
            await self._write(
                run,
                EventType.STEP_STARTED,
                step.id,
                {"attempt": attempt, **({"resumed": True} if resumed else {})},
                step_values={step.id: values},
            )
            try:
                params = templates.render(step.params, scope(run, outputs))
                result = await self._attempt(run, step, params, attempt)
            except templates.TemplateError as exc:
                error = error_json("INVALID_ARGUMENT", f"step {step.id}: {exc}", "TEMPLATE_ERROR")
                await self._step_failed(run, step, error, attempt)
                raise StepFailed(error) from exc
            except StepFailed as exc:
                if policy.retries(attempt, str(exc.error.get("code", ""))):
                    await self._retry_later(run, step, exc.error, attempt, policy)
                    attempt, resumed = attempt + 1, False
                    continue
                await self._step_failed(run, step, exc.error, attempt)
                raise
            except (LeaseLost, AwaitingApproval, JournalWriteFailed):
                raise
            except Exception as exc:
                # A bug, not an outcome: journal it as a failure so the run ends instead of being
                # reclaimed and re-executed in a loop. (Cancellation is not an Exception and passes.)
                log.exception("step crashed", extra={"fields": {"step_id": step.id}})
                error = error_json(
                    "INTERNAL", f"step {step.id} crashed: {type(exc).__name__}", "STEP_CRASHED"
                )
                await self._step_failed(run, step, error, attempt)
                raise StepFailed(error) from exc
            await self._write(
                run,
                EventType.STEP_SUCCEEDED,
                step.id,
                {
                    "output": result.output,
                    "attempt": attempt,
                    "input_digest": input_digest(params),
                    **result.meta,
                },
                step_values={
                    step.id: {
                        "state": StepState.SUCCEEDED.value,
                        "output": result.output,
                        "error": None,
                        "end_time": utcnow(),
                    }
                },
                tokens=(result.input_tokens, result.output_tokens),
                defer=True,
            )
            return result

    async def _attempt(
        self, run: RunRecord, step: PlanStep, params: dict[str, Any], attempt: int
    ) -> StepResult:
        """One call, bounded by `timeout_seconds`; a timeout is DEADLINE_EXCEEDED (and retries as such).

        An attempt that timed out or failed with DEADLINE_EXCEEDED may still be running at the callee
        (keyed tool executions outlive their caller), so it is stopped there before anything else happens.
        """
        timeout = params.get("timeout_seconds")
        try:
            if not timeout:
                return await self._call(run, step, params, attempt)
            deadline = asyncio.timeout(float(timeout))
            try:
                async with deadline:
                    return await self._call(run, step, params, attempt)
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise StepFailed(
                    error_json(
                        "DEADLINE_EXCEEDED",
                        f"step {step.id}: attempt {attempt} timed out after {timeout} s",
                        "STEP_TIMEOUT",
                    )
                ) from None
        except StepFailed as exc:
            if exc.error.get("code") == "DEADLINE_EXCEEDED":
                await self._stop_call(run, step, params, attempt)
            raise

    async def _call(self, run: RunRecord, step: PlanStep, params: dict[str, Any], attempt: int) -> StepResult:
        async def emit(kind: EventType, step_id: str, data: dict[str, Any]) -> None:
            await self._write(run, kind, step_id, data)

        if step.kind == "model":
            return await self.calls.model(run, step.id, params, emit, attempt=attempt)
        if step.kind == "tool":
            return await self.calls.tool(run, step.id, params, emit, attempt=attempt)
        if step.kind == "memory":
            return await self.calls.memory(run, step.id, params, emit, attempt=attempt)
        if step.kind == "agent":
            journal = await self.store.step_events(run.run_id, step.id, AGENT_EVENTS)
            return await run_agent_step(self.calls, journal, run, step.id, params, attempt, emit, self.gate)
        if step.kind == "value":
            return run_value_step(step.id, params)
        raise StepFailed(
            error_json("UNIMPLEMENTED", f"step kind {step.kind!r} is not executable", "STEP_KIND")
        )

    async def _gate_step(self, run: RunRecord, step: PlanStep, outputs: dict[str, Any], attempt: int) -> None:
        """Before an attempt starts: AwaitingApproval if a policy gates it and its ticket is not decided; a
        rejected (or expired) ticket fails the step, never retried."""
        if self.gate is None or not self.gate.may_gate(run, step):
            return
        try:
            params = templates.render(step.params, scope(run, outputs))
        except templates.TemplateError:
            return  # the attempt fails on the same template, journaled
        call = step_call(run, step, params)
        if call is None:
            return
        key = f"{run.run_id}/{step.id}/{attempt}"
        error = await self.gate.check(run, call, key, StepState.PENDING)
        if error is not None:
            await self._step_failed(run, step, error, attempt)
            raise StepFailed(error)

    async def _park(self, run: RunRecord, requests: list[ParkRequest]) -> RunState:
        """Tickets, WAITING states, events and the lease's release: one transaction (`waiting.park`)."""
        async with self._lock:
            if self._broken is not None:
                raise JournalWriteFailed(self._broken)
            # Buffered writes (results, RUN_STARTED) first: park numbers its events after them.
            written = await self._commit(run.run_id) if self._pending else []
            parked = await park(self.store, run, self.owner, self._seq, requests)
            if parked is None:
                raise LeaseLost(run.run_id)
            self._seq = parked.events[-1].seq
            self._state = RunState.WAITING
            self.released = True
        if self.gate is not None:
            self.gate.parked(run, parked.tickets)
        await self._notify(run.run_id, [*written, *parked.events])
        return RunState.WAITING

    async def _stop_call(self, run: RunRecord, step: PlanStep, params: dict[str, Any], attempt: int) -> None:
        try:
            if step.kind == "agent":
                journal = await self.store.step_events(run.run_id, step.id, AGENT_EVENTS)
                stop = stop_agent_calls(self.calls, journal, run, step.id, params, attempt)
            else:
                stop = self.calls.stop(run, step.id, step.kind, params, attempt)
            await asyncio.wait_for(stop, STOP_TIMEOUT)
        except Exception:
            log.warning(
                "could not stop a call at its callee",
                exc_info=True,
                extra={"fields": {"step_id": step.id, "attempt": attempt}},
            )

    async def _retry_later(
        self, run: RunRecord, step: PlanStep, error: dict[str, Any], attempt: int, policy: RetryPolicy
    ) -> None:
        """Journal the failed attempt as one that will be retried (the step goes back to PENDING), wait."""
        delay = policy.backoff(attempt, self._rand)
        await self._write(
            run,
            EventType.STEP_FAILED,
            step.id,
            {"error": error, "attempt": attempt, "will_retry": True, "retry_in_seconds": round(delay, 3)},
            step_values={step.id: {"state": StepState.PENDING.value, "error": error}},
        )
        await self._sleep(delay)

    async def _step_failed(self, run: RunRecord, step: PlanStep, error: dict[str, Any], attempt: int) -> None:
        await self._write(
            run,
            EventType.STEP_FAILED,
            step.id,
            {"error": error, "attempt": attempt, "will_retry": False},
            step_values={step.id: {"state": StepState.FAILED.value, "error": error, "end_time": utcnow()}},
        )

    async def _finish(
        self, run: RunRecord, state: RunState, *, output: Any = None, error: dict[str, Any] | None = None
    ) -> RunState:
        kind = {
            RunState.SUCCEEDED: EventType.RUN_SUCCEEDED,
            RunState.FAILED: EventType.RUN_FAILED,
            RunState.CANCELLED: EventType.RUN_CANCELLED,
        }[state]
        data: dict[str, Any] = {"output": output} if state is RunState.SUCCEEDED else {"error": error}
        skipped = {
            s.id: {"state": StepState.SKIPPED.value}
            for s in run.plan.steps
            if state is not RunState.SUCCEEDED and s.id not in _finished_steps(run)
        }
        await self._write(
            run,
            kind,
            "",
            data,
            run_values={"state": state.value, "output": output, "error": error, "end_time": utcnow()},
            step_values=skipped or None,
            new_state=state,
            release=True,
        )
        return state

    def _run_output(self, run: RunRecord, outputs: dict[str, Any]) -> Any:
        if run.plan.output is None:
            return dict(outputs)
        return templates.render(run.plan.output, scope(run, outputs))

    async def _write(
        self,
        run: RunRecord,
        kind: EventType,
        step_id: str,
        data: dict[str, Any],
        *,
        run_values: dict[str, Any] | None = None,
        step_values: dict[str, dict[str, Any]] | None = None,
        tokens: tuple[int, int] = (0, 0),
        new_state: RunState | None = None,
        defer: bool = False,
        release: bool = False,
    ) -> None:
        """Journal an event and the changes it records, in one transaction with any buffered ones.

        `defer` buffers the write instead (RUN_STARTED, a step's result): the next transition carries it
        (the next step's STEP_STARTED, the run's final event), so a step costs one transaction, not two.
        A buffered write is never left behind while the run waits (`_walk` flushes before waiting), and a
        call with side effects never starts before its STEP_STARTED, with everything before it, is
        committed. Event numbers are assigned in order either way.
        """
        async with self._lock:
            if self._broken is not None:
                raise JournalWriteFailed(self._broken)
            state = new_state or self._state
            event = Event(run.run_id, self._seq + 1, kind, step_id, state, data, utcnow())
            self._pending.append(_Pending(event, run_values, step_values, tokens))
            self._seq = event.seq
            self._state = state
            for sid, changes in (step_values or {}).items():
                for record in run.steps:
                    if record.step_id == sid:
                        record.state = StepState(changes.get("state", record.state))
                        record.attempts = changes.get("attempts", record.attempts)
            if defer:
                return
            written = await self._commit(run.run_id, release=release)
        await self._notify(run.run_id, written)

    async def flush(self) -> None:
        """Journal buffered writes now (before waiting, or before the run is read back after a cancel)."""
        async with self._lock:
            if self._broken is not None:
                raise JournalWriteFailed(self._broken)
            if not self._pending:
                return
            run_id = self._pending[0].event.run_id
            written = await self._commit(run_id)
        await self._notify(run_id, written)

    async def _commit(self, run_id: str, *, release: bool = False) -> list[Event]:
        """One transaction for everything pending (the lock is held); the events written."""
        batch, self._pending = self._pending, []
        run_values: dict[str, Any] = {}
        step_values: dict[str, dict[str, Any]] = {}
        tokens = [0, 0]
        for item in batch:
            run_values.update(item.run_values or {})
            for sid, changes in (item.step_values or {}).items():
                step_values.setdefault(sid, {}).update(changes)
            tokens[0] += item.tokens[0]
            tokens[1] += item.tokens[1]
        try:
            ok = await self.store.transition(
                run_id,
                self.owner,
                [item.event for item in batch],
                run_values=run_values or None,
                step_values=step_values or None,
                add_tokens=(tokens[0], tokens[1]),
                lease_seconds=self.lease_seconds,
                release=release,
            )
        except Exception as exc:
            # The batch and the event numbers already given out cannot be rewound: the write may have
            # committed before the error (a reset connection), so only the journal knows. Stop here.
            log.warning("journal write failed; the run resumes from its journal", exc_info=True)
            self._broken = f"run {run_id}: journal write failed: {exc!r}"
            raise JournalWriteFailed(self._broken) from exc
        if not ok:
            raise LeaseLost(run_id)
        self.last_write = time.monotonic()
        self.released = release
        return [item.event for item in batch]


@dataclass(frozen=True)
class _Pending:
    """A journal write waiting for the next transaction."""

    event: Event
    run_values: dict[str, Any] | None
    step_values: dict[str, dict[str, Any]] | None
    tokens: tuple[int, int]


_FALSE_WORDS = frozenset({"", "false", "0", "no", "off", "none", "null"})


def _truthy(value: Any) -> bool:
    """A `when` value: false, null, 0, empty, and the words false/no/off/none/null (any case) are false."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_WORDS
    return bool(value)


class _Spend:
    """What a run has spent (from its journal, then each step as it succeeds) against its budget."""

    def __init__(self, run: RunRecord) -> None:
        self.budget = Budget.from_json(run.budget)
        self.tokens = run.input_tokens + run.output_tokens
        self.cost_usd = spent_usd(run.steps)

    def add(self, step: PlanStep, result: StepResult) -> None:
        self.tokens += result.input_tokens + result.output_tokens
        if step.kind in SPENDING_KINDS and isinstance(result.output, dict):
            self.cost_usd += float(result.output.get("cost_usd") or 0.0)

    def exhausted(self) -> dict[str, Any] | None:
        """The run error when the budget is spent, else None."""
        budget = self.budget
        if budget is None:
            return None
        over_cost = budget.max_cost_usd > 0 and self.cost_usd >= budget.max_cost_usd
        over_tokens = budget.max_tokens > 0 and self.tokens >= budget.max_tokens
        if not (over_cost or over_tokens):
            return None
        return error_json(
            "RESOURCE_EXHAUSTED",
            f"budget spent: ${self.cost_usd:.6f} of ${budget.max_cost_usd:.6f}, "
            f"{self.tokens} of {budget.max_tokens} tokens",
            "BUDGET_EXHAUSTED",
            spent_cost_usd=f"{self.cost_usd:.6f}",
            spent_tokens=str(self.tokens),
            max_cost_usd=f"{budget.max_cost_usd:.6f}",
            max_tokens=str(budget.max_tokens),
        )


def _unless_tolerated(
    run: RunRecord, step: PlanStep, exc: StepFailed, outputs: dict[str, Any]
) -> StepFailed | None:
    """None when the step's plan says `on_error: continue`: the failure settles the step (FAILED, its error
    in the scope of later steps) instead of failing the run; else the failure."""
    if step.params.get("on_error") != "continue":
        return exc
    outputs[step.id] = None
    for record in run.steps:
        if record.step_id == step.id:
            record.error = exc.error
    return None


def _finished_steps(run: RunRecord) -> set[str]:
    return {s.step_id for s in run.steps if s.state in (StepState.SUCCEEDED, StepState.FAILED)}
