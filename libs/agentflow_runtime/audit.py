"""AuditSink: services record decisions without waiting; batches go to AuditIngestService in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import grpc
from agentflow.audit.v1 import audit_pb2, audit_pb2_grpc

from agentflow_runtime import context
from agentflow_runtime.outcomes import OUTCOMES
from agentflow_runtime.protojson import struct_from_dict, timestamp, utcnow

log = logging.getLogger("agentflow.audit")

_REJECTED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED}
"""Answers that a retry cannot change: the event is dropped (and logged), never retried forever."""


class AuditSink:
    """Buffers audit events and appends them in batches; keeps them (bounded) while audit is down."""

    def __init__(
        self,
        channel: grpc.aio.Channel | None,
        *,
        batch_size: int = 200,
        interval: float = 0.05,
        max_buffer: int = 100_000,
    ) -> None:
        self._stub = audit_pb2_grpc.AuditIngestServiceStub(channel) if channel is not None else None
        self._buffer: deque[audit_pb2.AuditEvent] = deque(maxlen=max_buffer)
        self._batch_size = batch_size
        self._interval = interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def record(
        self,
        action: str,
        resource: str,
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
    ) -> None:
        """Queue one event; tenant and principal come from the current call context."""
        if outcome not in OUTCOMES:
            raise ValueError(f"audit outcome {outcome!r} is not one of {sorted(OUTCOMES)}")
        if self._stub is None:
            return
        ctx = context.current()
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
            log.error("audit buffer full; oldest event dropped", extra={"fields": {"dropped": self.dropped}})
        self._buffer.append(
            audit_pb2.AuditEvent(
                event_time=timestamp(utcnow()),
                tenant=ctx.tenant,
                principal=ctx.principal,
                action=action,
                resource=resource,
                outcome=outcome,
                details=struct_from_dict(details),
            )
        )
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    def start(self) -> None:
        """Start the background flusher."""
        if self._stub is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        backoff = self._interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            backoff = self._interval if await self.flush() else min(backoff * 2, 5.0)

    async def flush(self) -> bool:
        """Send everything buffered; False when audit could not be reached (events are kept)."""
        assert self._stub is not None or not self._buffer
        while self._buffer and self._stub is not None:
            batch = [self._buffer[i] for i in range(min(self._batch_size, len(self._buffer)))]
            try:
                await self._append(batch)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _REJECTED:
                    log.warning(
                        "audit append failed; will retry", extra={"fields": {"code": exc.code().name}}
                    )
                    return False
                # One bad event must not hold back the rest: append one by one, drop what is refused.
                if not await self._append_each(batch):
                    return False
            for _ in batch:
                self._buffer.popleft()
        return True

    async def _append(self, batch: list[audit_pb2.AuditEvent]) -> None:
        assert self._stub is not None
        await self._stub.AppendAuditEvents(audit_pb2.AppendAuditEventsRequest(audit_events=batch), timeout=10)

    async def _append_each(self, batch: list[audit_pb2.AuditEvent]) -> bool:
        """Append events singly; False when audit became unreachable (the batch stays buffered)."""
        for event in batch:
            try:
                await self._append([event])
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _REJECTED:
                    return False
                self.dropped += 1
                log.error(
                    "audit refused an event; dropped",
                    extra={"fields": {"action": event.action, "code": exc.code().name, "why": exc.details()}},
                )
        return True

    async def close(self) -> None:
        """Flush what is left (best effort) and stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._stub is not None:
            await self.flush()
