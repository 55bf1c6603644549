"""Executions with idempotency: a recorded key is answered from its record, a new one runs and is recorded.

A keyed execution belongs to the sandbox, not to the stream that asked for it:

- Before the process starts, an in-progress marker (state RUNNING, this instance's id, a heartbeat) is
  written, so every sandbox instance sharing the database knows the key is taken.
- The process runs in a background task. The caller's stream only follows it: when the caller goes away
  (a worker SIGKILLed mid-call, a dropped connection) the execution runs to completion and is recorded.
- A repeated key while the execution is still running *in this process* attaches to it: the new stream
  gets every chunk from the first one (kept in memory, bounded by the tool's output cap), then the live
  ones, then the result marked `replayed`. The tool runs once.
- A repeated key whose marker belongs to another live instance waits for that instance's record. A marker
  whose owner stopped heartbeating (the sandbox instance died) is taken over and the tool runs again:
  exactly-once holds across caller crashes; across a crash of the sandbox itself it is at-least-once.
- `cancel` (CancelToolExecution) is the only way to stop a keyed execution early: it kills the process
  group and records the execution as cancelled. A key cancelled before it started is recorded as cancelled
  too, so a late ExecuteTool with it never runs the tool.

Unkeyed executions are unchanged: they run inside the caller's stream, and closing the stream kills them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from agentflow_runtime.errors import AgentFlowError, FailedPrecondition, Unavailable

from agentflow_tool_sandbox.arguments import args_digest
from agentflow_tool_sandbox.backend import Runner
from agentflow_tool_sandbox.events import Chunk, Event, Result, Stream
from agentflow_tool_sandbox.spec import ToolSpec
from agentflow_tool_sandbox.store import CANCELLING, RUNNING, ExecutionRecord, ExecutionStore, Marker

log = logging.getLogger("agentflow.tool_sandbox.executions")

CANCELLED_EXIT = -9
CANCELLED_NOTE = "cancelled by CancelToolExecution"


@dataclass
class _Live:
    """A keyed execution running in this process, and what it has produced so far."""

    tool_id: str
    digest: str
    events: list[Event] = field(default_factory=list)
    finished: bool = False
    error: BaseException | None = None
    cancel_requested: bool = False
    updated: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    process: asyncio.Task[Result] | None = None

    def push(self, event: Event) -> None:
        self.events.append(event)
        self._wake()

    def end(self, error: BaseException | None = None) -> None:
        self.finished, self.error = True, error
        self.done.set()
        self._wake()

    def _wake(self) -> None:
        updated, self.updated = self.updated, asyncio.Event()
        updated.set()

    def cancel(self) -> None:
        self.cancel_requested = True
        if self.process is not None:
            self.process.cancel()

    async def follow(self, replayed: bool) -> AsyncGenerator[Event, None]:
        """Every event from the first; the result marked `replayed` for an attached caller."""
        seen = 0
        while True:
            updated = self.updated
            while seen < len(self.events):
                event = self.events[seen]
                seen += 1
                yield event.as_replayed() if replayed and isinstance(event, Result) else event
            if self.finished:
                if isinstance(self.error, asyncio.CancelledError):
                    raise Unavailable(
                        "the tool sandbox stopped during the execution; retry the call",
                        reason="SANDBOX_STOPPING",
                    )
                if isinstance(self.error, AgentFlowError):
                    raise self.error  # e.g. an MCP server that cannot be reached: keep its status
                if self.error is not None:
                    raise RuntimeError("the execution failed") from self.error
                return
            await updated.wait()


class ToolCaller(Protocol):
    """Calls a tool that is not a process (an imported MCP tool): chunks, then one Result."""

    def execute(self, tool: ToolSpec, arguments: Mapping[str, Any]) -> AsyncGenerator[Event, None]: ...


class Executions:
    """Runs tools through a sandbox backend, keeping a record per idempotency key."""

    def __init__(
        self,
        runner: Runner,
        store: ExecutionStore,
        *,
        heartbeat_seconds: float = 2.0,
        stale_seconds: float = 10.0,
        instance: str | None = None,
        mcp: ToolCaller | None = None,
    ) -> None:
        self.runner = runner
        self.mcp = mcp
        self.store = store
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self.instance = instance or f"sandbox-{uuid.uuid4().hex[:12]}"
        self._live: dict[tuple[str, str], _Live] = {}

    async def execute(
        self, tenant: str, tool: ToolSpec, arguments: Mapping[str, Any], idempotency_key: str = ""
    ) -> AsyncGenerator[Event, None]:
        """Chunks then the result. With a key already recorded for `tenant`: the recorded output (one chunk
        per stream) and the recorded result marked `replayed`, without running anything; with a key still
        running here: its chunks and result (see the module docstring).

        The record is written once the process has finished and before the result is yielded, so a caller
        that saw a result can rely on a retry with the same key replaying it.
        """
        if not idempotency_key:
            async with aclosing(self._events(tool, arguments)) as events:
                async for event in events:
                    yield event
            return
        digest = args_digest(arguments)
        source = await self._source(tenant, tool, arguments, idempotency_key, digest)
        async with aclosing(source) as events:
            async for event in events:
                yield event

    def _events(self, tool: ToolSpec, arguments: Mapping[str, Any]) -> AsyncGenerator[Event, None]:
        """The tool's events: a call to its MCP server for an imported tool, else its process."""
        if tool.mcp is not None and self.mcp is not None:
            return self.mcp.execute(tool, arguments)
        return self.runner.execute(
            tool.process, tool.limits, arguments, permissions=tool.permissions, tool_id=tool.tool_id
        )

    async def close(self, grace: float) -> None:
        """On shutdown: let running keyed executions finish for up to `grace` seconds, then kill the rest.

        A killed one is not recorded (it did not finish and was not cancelled on request): its marker goes
        stale and a retry of its key runs the tool again (at-least-once across a sandbox restart). Its
        followers get UNAVAILABLE.
        """
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def cancel(self, tenant: str, tool_id: str, key: str) -> str:
        """Stop a keyed execution; `cancelled` or `finished` (it had ended before; its record stands)."""
        live = self._live.get((tenant, key))
        if live is not None:
            live.cancel()
            await live.done.wait()
            record = await self.store.get(tenant, key)
            return "cancelled" if record is None or record.result.cancelled else "finished"
        record = await self.store.get(tenant, key)
        if record is not None:
            return "cancelled" if record.result.cancelled else "finished"
        marker = await self.store.marker(tenant, key)
        if marker is not None and not self._stale(marker):
            # Running in another sandbox instance: it kills the process at its next heartbeat.
            await self.store.request_cancel(tenant, key)
            return "cancelled"
        # Not started (or its instance died): record the key as cancelled so it never runs.
        tombstone = Result(exit_code=CANCELLED_EXIT, stderr=CANCELLED_NOTE, cancelled=True)
        await self.store.finish(
            ExecutionRecord(tenant, key, tool_id, "", tombstone, b"", CANCELLED_NOTE.encode()), None
        )
        return "cancelled"

    async def _source(
        self, tenant: str, tool: ToolSpec, arguments: Mapping[str, Any], key: str, digest: str
    ) -> AsyncGenerator[Event, None]:
        """Where the events of a keyed call come from: a live execution, a record, or a new execution."""
        while True:
            live = self._live.get((tenant, key))
            if live is not None:
                _check_same_call(key, live.tool_id, live.digest, tool, digest)
                return live.follow(replayed=True)
            record = await self.store.get(tenant, key)
            if record is not None:
                _check_record(record, tool, digest)
                return _replay(record)
            marker = await self.store.marker(tenant, key)
            if marker is None:
                now = datetime.now(UTC)
                mine = Marker(tenant, key, tool.tool_id, digest, RUNNING, self.instance, now)
                if not await self.store.claim(mine):
                    continue  # another caller claimed it first: look again
                if await self.store.get(tenant, key) is not None:
                    # Recorded (and its marker dropped) between our look and our claim.
                    await self.store.finish_marker(tenant, key, self.instance)
                    continue
                return self._start(tenant, tool, arguments, key, digest).follow(replayed=False)
            _check_same_call(key, marker.tool_id, marker.args_digest, tool, digest)
            if self._stale(marker) and await self.store.take_over(
                tenant, key, self.instance, self._stale_before()
            ):
                log.warning(
                    "re-executing a keyed call whose sandbox instance stopped heartbeating",
                    extra={"fields": {"idempotency_key": key, "owner": marker.owner}},
                )
                return self._start(tenant, tool, arguments, key, digest).follow(replayed=False)
            await asyncio.sleep(min(self.heartbeat_seconds, 0.5))

    def _stale_before(self) -> datetime:
        return datetime.now(UTC) - timedelta(seconds=self.stale_seconds)

    def _stale(self, marker: Marker) -> bool:
        heartbeat = marker.heartbeat
        if heartbeat.tzinfo is None:
            heartbeat = heartbeat.replace(tzinfo=UTC)
        return marker.owner == self.instance or heartbeat < self._stale_before()

    def _start(
        self, tenant: str, tool: ToolSpec, arguments: Mapping[str, Any], key: str, digest: str
    ) -> _Live:
        live = _Live(tool.tool_id, digest)
        self._live[(tenant, key)] = live
        live.task = asyncio.get_running_loop().create_task(
            self._run(live, tenant, tool, dict(arguments), key, digest)
        )
        return live

    async def _run(
        self, live: _Live, tenant: str, tool: ToolSpec, arguments: dict[str, Any], key: str, digest: str
    ) -> None:
        captured: dict[Stream, list[bytes]] = {Stream.STDOUT: [], Stream.STDERR: []}

        async def drive() -> Result:
            result: Result | None = None
            async with aclosing(self._events(tool, arguments)) as events:
                async for event in events:
                    if isinstance(event, Chunk):
                        captured[event.stream].append(event.data)
                        live.push(event)
                    else:
                        result = event
            if result is None:
                raise RuntimeError("the sandbox backend ended without a result")
            return result

        loop = asyncio.get_running_loop()
        live.process = loop.create_task(drive())
        if live.cancel_requested:  # cancelled between `_start` and this task's first step
            live.process.cancel()
        beat = loop.create_task(self._beat(live, tenant, key))
        error: BaseException | None = None
        try:
            await asyncio.wait({live.process})
            if live.process.cancelled():
                stderr = b"".join(captured[Stream.STDERR]).decode("utf-8", "replace")
                result = Result(exit_code=CANCELLED_EXIT, stderr=f"{stderr}{CANCELLED_NOTE}", cancelled=True)
                captured[Stream.STDERR].append(CANCELLED_NOTE.encode())
            else:
                result = live.process.result()
            await self.store.finish(
                ExecutionRecord(
                    tenant=tenant,
                    idempotency_key=key,
                    tool_id=tool.tool_id,
                    args_digest=digest,
                    result=result,
                    stdout=b"".join(captured[Stream.STDOUT]),
                    stderr=b"".join(captured[Stream.STDERR]),
                ),
                self.instance,
            )
            live.push(result)
        except asyncio.CancelledError as exc:
            # The service is stopping: kill the process (its group, through the runner) and record nothing;
            # the marker goes stale and a retry of the key re-runs the tool.
            live.process.cancel()
            await asyncio.gather(live.process, return_exceptions=True)
            error = exc
            raise
        except Exception as exc:
            if not isinstance(exc, AgentFlowError):
                log.exception("keyed execution failed", extra={"fields": {"idempotency_key": key}})
            error = exc
            # Nothing was recorded: drop the marker so a retry with the key runs again at once.
            with contextlib.suppress(Exception):
                await self.store.finish_marker(tenant, key, self.instance)
        finally:
            beat.cancel()
            self._live.pop((tenant, key), None)
            live.end(error)

    async def _beat(self, live: _Live, tenant: str, key: str) -> None:
        """Keep the marker fresh; kill the process when another instance asked for a cancel."""
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                state = await self.store.beat(tenant, key, self.instance)
            except Exception:
                log.exception("execution heartbeat failed", extra={"fields": {"idempotency_key": key}})
                continue
            if state == CANCELLING:
                live.cancel()
                return


def _check_same_call(key: str, tool_id: str, digest: str, tool: ToolSpec, wanted: str) -> None:
    if tool_id != tool.tool_id or digest != wanted:
        raise FailedPrecondition(
            "idempotency_key was already used for a different call",
            reason="IDEMPOTENCY_KEY_REUSED",
            metadata={"idempotency_key": key, "recorded_tool": tool_id},
        )


def _check_record(record: ExecutionRecord, tool: ToolSpec, digest: str) -> None:
    # A key cancelled before it started was recorded without arguments: any call with it is "that call".
    recorded_digest = digest if record.result.cancelled and not record.args_digest else record.args_digest
    _check_same_call(record.idempotency_key, record.tool_id, recorded_digest, tool, digest)


async def _replay(record: ExecutionRecord) -> AsyncGenerator[Event, None]:
    seq = 0
    for stream, data in ((Stream.STDOUT, record.stdout), (Stream.STDERR, record.stderr)):
        if data:
            seq += 1
            yield Chunk(seq=seq, stream=stream, data=data)
    yield record.result.as_replayed()
