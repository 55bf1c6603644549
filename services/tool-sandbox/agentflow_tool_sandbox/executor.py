"""The process backend: runs a tool as a plain child process in its own session, scratch dir and rlimits.

The child is `launch.py` (rlimits, then exec of the tool), so nothing runs between fork and exec, and the
backend reaps the process itself with `wait4` to report that process's own resource usage.

It streams stdout and stderr as they arrive, caps captured output, enforces wall time, and kills the whole
process group when it stops early for any reason (limit, cancellation, closed iterator) or when the tool
exits, so nothing the tool started outlives the call.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentflow_tool_sandbox import process, rlimits
from agentflow_tool_sandbox.events import Chunk, Event, Result, Stream, Usage
from agentflow_tool_sandbox.output import OutputBudget, parse_output, stderr_text
from agentflow_tool_sandbox.spec import Limits, ProcessSpec

CHUNK_BYTES = 16 * 1024
PYTHON_PLACEHOLDER = "{python}"
BASE_PATH = "/usr/bin:/bin"

_Item = tuple[Stream, bytes | None]


@dataclass(frozen=True)
class ProcessBackendConfig:
    """Host-side settings of the process backend."""

    scratch_root: Path
    max_processes: int = 256
    max_file_bytes: int = 64 * 1024 * 1024
    python: str = field(default_factory=lambda: sys.executable)


class ProcessRunner:
    """The `Runner` that starts tools as ordinary child processes."""

    def __init__(self, config: ProcessBackendConfig) -> None:
        self.config = config
        self._cleanups: set[asyncio.Task[tuple[int, Usage]]] = set()

    def command(self, spec: ProcessSpec) -> list[str]:
        """The argv to start: `{python}` becomes the interpreter running this service."""
        return [arg.replace(PYTHON_PLACEHOLDER, self.config.python) for arg in spec.command]

    async def execute(
        self, spec: ProcessSpec, limits: Limits, arguments: Mapping[str, Any]
    ) -> AsyncGenerator[Event, None]:
        """Run `spec`; see `Runner.execute`."""
        limits = limits.with_defaults()
        self.config.scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="call-", dir=self.config.scratch_root.resolve()))
        env = {"PATH": BASE_PATH, "HOME": str(scratch), "LANG": "C.UTF-8", **spec.env}
        limit_plan = rlimits.plan(
            limits, max_processes=self.config.max_processes, max_file_bytes=self.config.max_file_bytes
        )
        argv = rlimits.launch_argv(self.config.python, limit_plan, self.command(spec))
        try:
            popen = process.spawn(argv, env=env, cwd=scratch)
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            message = f"cannot start {argv[0]!r}: {exc.strerror or exc}\n"
            yield Result(exit_code=process.start_error_code(exc), stderr=message)
            return
        run = _Run(popen, scratch, limits)
        try:
            async with aclosing(run.stream(_payload(arguments))) as events:
                async for event in events:
                    yield event
        finally:
            run.stop()
            cleanup = run.cleanup_task()
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            await asyncio.shield(cleanup)


class _Run:
    """One execution of the process backend."""

    def __init__(self, popen: subprocess.Popen[bytes], scratch: Path, limits: Limits) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.scratch = scratch
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
        """The (single) task that reaps the process and removes the scratch directory."""
        if self._cleanup is None:
            self._cleanup = self.loop.create_task(self._finish())
        return self._cleanup

    async def _finish(self) -> tuple[int, Usage]:
        try:
            await asyncio.shield(self.exit_task)
            exit_code, usage = process.reap(self.pid)
            self.popen.returncode = exit_code
            wall = (self.ended or self.loop.time()) - self.started
            return exit_code, Usage(usage.cpu_seconds, usage.max_rss_bytes, wall)
        finally:
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await asyncio.to_thread(shutil.rmtree, self.scratch, True)

    async def _watch_exit(self) -> None:
        await process.exited(self.pid)
        self.ended = self.loop.time()
        # The leader is gone: whatever it left behind in its group goes too, closing the pipes it held.
        process.kill_group(self.pid)

    async def _pump(self, stream: Stream, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(CHUNK_BYTES):
            await self.queue.put((stream, data))
        await self.queue.put((stream, None))


def _payload(arguments: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(arguments), ensure_ascii=False, separators=(",", ":")).encode()
