"""Supervises one spawned tool process for any backend: streams its output, enforces wall time and the
output cap, kills its whole process group when it stops early (limit, cancellation, closed iterator) or when
it exits, and reaps it with `wait4` for its resource usage."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any

from agentflow_tool_sandbox import process
from agentflow_tool_sandbox.events import Chunk, Event, Result, Stream, Usage
from agentflow_tool_sandbox.output import OutputBudget, parse_output, stderr_text
from agentflow_tool_sandbox.spec import Limits

CHUNK_BYTES = 16 * 1024

_Item = tuple[Stream, bytes | None]


def payload(arguments: Mapping[str, Any]) -> bytes:
    """The arguments as the JSON a tool reads on stdin."""
    return json.dumps(dict(arguments), ensure_ascii=False, separators=(",", ":")).encode()


async def supervise(
    popen: subprocess.Popen[bytes],
    limits: Limits,
    arguments: Mapping[str, Any],
    *,
    cleanups: set[asyncio.Task[tuple[int, Usage]]],
    on_finish: Callable[[], None] = lambda: None,
    exit_code: Callable[[int], int] = lambda code: code,
    usage: Callable[[Usage], Usage] = lambda reaped: reaped,
) -> AsyncGenerator[Event, None]:
    """Chunks, then the result, of the started `popen` (see `Runner.execute`).

    `on_finish` runs (in a thread) once the process is reaped; `exit_code` translates the reaped exit
    code (a wrapper's convention for a signalled child, say); `usage` the reaped usage (to the usage a
    wrapper reported for the tool itself). The cleanup task is kept in `cleanups`
    until done, so an abandoned stream still reaps its process.
    """
    run = _Run(popen, limits, on_finish, exit_code, usage)
    try:
        async with aclosing(run.stream(payload(arguments))) as events:
            async for event in events:
                yield event
    finally:
        run.stop()
        cleanup = run.cleanup_task()
        cleanups.add(cleanup)
        cleanup.add_done_callback(cleanups.discard)
        await asyncio.shield(cleanup)


class _Run:
    """One supervised execution."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        limits: Limits,
        on_finish: Callable[[], None],
        exit_code: Callable[[int], int],
        usage: Callable[[Usage], Usage],
    ) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.on_finish = on_finish
        self.exit_code = exit_code
        self.usage = usage
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.ended: float | None = None
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=4)
        self.tasks: list[asyncio.Task[None]] = []
        self.transports: list[asyncio.BaseTransport] = []
        self.exit_task = self.loop.create_task(self._watch_exit())
        self._cleanup: asyncio.Task[tuple[int, Usage]] | None = None

    async def stream(self, payload: bytes) -> AsyncGenerator[Event, None]:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        assert self.popen.stderr is not None
        stdin = os.dup(self.popen.stdin.fileno())
        self.popen.stdin.close()
        self.tasks.append(self.loop.create_task(process.feed(stdin, payload)))
        for stream, pipe in ((Stream.STDOUT, self.popen.stdout), (Stream.STDERR, self.popen.stderr)):
            reader = asyncio.StreamReader(limit=4 * CHUNK_BYTES)
            transport, _ = await self.loop.connect_read_pipe(
                functools.partial(asyncio.StreamReaderProtocol, reader), pipe
            )
            self.transports.append(transport)
            self.tasks.append(self.loop.create_task(self._pump(stream, reader)))

        deadline = self.started + self.limits.wall_time_seconds
        budget = OutputBudget(self.limits.output_bytes)
        captured: dict[Stream, list[bytes]] = {Stream.STDOUT: [], Stream.STDERR: []}
        timed_out = truncated = False
        seq, open_streams = 0, 2
        while open_streams:
            try:
                stream, data = await asyncio.wait_for(self.queue.get(), deadline - self.loop.time())
            except TimeoutError:
                timed_out = True
                break
            if data is None:
                open_streams -= 1
                continue
            allowed = budget.take(len(data))
            if allowed:
                seq += 1
                captured[stream].append(data[:allowed])
                yield Chunk(seq=seq, stream=stream, data=data[:allowed])
            if allowed < len(data):
                truncated = True
                break
        if not (timed_out or truncated):
            try:
                await asyncio.wait_for(asyncio.shield(self.exit_task), deadline - self.loop.time())
            except TimeoutError:
                timed_out = True
        self.stop()
        exit_code, usage = await self.cleanup_task()
        stdout = b"".join(captured[Stream.STDOUT])
        yield Result(
            exit_code=exit_code,
            timed_out=timed_out,
            truncated=truncated,
            output=parse_output(stdout),
            stderr=stderr_text(b"".join(captured[Stream.STDERR])),
            usage=usage,
        )

    def stop(self) -> None:
        """Kill the process group and stop reading; safe to call more than once."""
        process.kill_group(self.pid)
        for task in self.tasks:
            task.cancel()
        for transport in self.transports:
            transport.close()

    def cleanup_task(self) -> asyncio.Task[tuple[int, Usage]]:
        """The (single) task that reaps the process and runs `on_finish`."""
        if self._cleanup is None:
            self._cleanup = self.loop.create_task(self._finish())
        return self._cleanup

    async def _finish(self) -> tuple[int, Usage]:
        try:
            await asyncio.shield(self.exit_task)
            exit_code, usage = process.reap(self.pid)
            self.popen.returncode = exit_code
            exit_code = self.exit_code(exit_code)
            wall = (self.ended or self.loop.time()) - self.started
            return exit_code, self.usage(Usage(usage.cpu_seconds, usage.max_rss_bytes, wall))
        finally:
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await asyncio.to_thread(self.on_finish)

    async def _watch_exit(self) -> None:
        await process.exited(self.pid)
        self.ended = self.loop.time()
        # The leader is gone: whatever it left behind in its group goes too, closing the pipes it held.
        process.kill_group(self.pid)

    async def _pump(self, stream: Stream, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(CHUNK_BYTES):
            await self.queue.put((stream, data))
        await self.queue.put((stream, None))
