"""Executions with idempotency: a recorded key is answered from its record, a new one runs and is recorded."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

from agentflow_runtime.errors import FailedPrecondition

from agentflow_tool_sandbox.arguments import args_digest
from agentflow_tool_sandbox.backend import Runner
from agentflow_tool_sandbox.events import Chunk, Event, Result, Stream
from agentflow_tool_sandbox.spec import ToolSpec
from agentflow_tool_sandbox.store import ExecutionRecord, ExecutionStore


class Executions:
    """Runs tools through a sandbox backend, keeping a record per idempotency key."""

    def __init__(self, runner: Runner, store: ExecutionStore) -> None:
        self.runner = runner
        self.store = store

    async def execute(
        self, tenant: str, tool: ToolSpec, arguments: Mapping[str, Any], idempotency_key: str = ""
    ) -> AsyncGenerator[Event, None]:
        """Chunks then the result. With a key already recorded for `tenant`: the recorded output (one chunk
        per stream) and the recorded result marked `replayed`, without running anything.

        The record is written once the process has finished and before the result is yielded, so a caller
        that saw a result can rely on a retry with the same key replaying it.
        """
        digest = args_digest(arguments)
        if idempotency_key:
            record = await self.store.get(tenant, idempotency_key)
            if record is not None:
                _check_same_call(record, tool, digest)
                async for event in _replay(record):
                    yield event
                return
        captured: dict[Stream, list[bytes]] = {Stream.STDOUT: [], Stream.STDERR: []}
        result: Result | None = None
        async with aclosing(self.runner.execute(tool.process, tool.limits, arguments)) as events:
            async for event in events:
                if isinstance(event, Chunk):
                    captured[event.stream].append(event.data)
                    yield event
                else:
                    result = event
        if result is None:
            raise RuntimeError("the sandbox backend ended without a result")
        if idempotency_key:
            await self.store.put(
                ExecutionRecord(
                    tenant=tenant,
                    idempotency_key=idempotency_key,
                    tool_id=tool.tool_id,
                    args_digest=digest,
                    result=result,
                    stdout=b"".join(captured[Stream.STDOUT]),
                    stderr=b"".join(captured[Stream.STDERR]),
                )
            )
        yield result


def _check_same_call(record: ExecutionRecord, tool: ToolSpec, digest: str) -> None:
    if record.tool_id != tool.tool_id or record.args_digest != digest:
        raise FailedPrecondition(
            "idempotency_key was already used for a different call",
            reason="IDEMPOTENCY_KEY_REUSED",
            metadata={"idempotency_key": record.idempotency_key, "recorded_tool": record.tool_id},
        )


async def _replay(record: ExecutionRecord) -> AsyncGenerator[Event, None]:
    seq = 0
    for stream, data in ((Stream.STDOUT, record.stdout), (Stream.STDERR, record.stderr)):
        if data:
            seq += 1
            yield Chunk(seq=seq, stream=stream, data=data)
    yield record.result.as_replayed()
