from __future__ import annotations

import asyncio
import signal
from contextlib import aclosing
from pathlib import Path

import pytest
from agentflow_tool_sandbox.events import Chunk, Stream
from agentflow_tool_sandbox.executor import ProcessRunner
from agentflow_tool_sandbox.spec import ProcessSpec

from .conftest import SAFETY_TIMEOUT, collect, entries, exists, limits, python_tool, resolved, stdout_of


def process_gone(pid: int) -> bool:
    """True once `pid` no longer runs (gone, or a zombie waiting for its new parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


async def wait_gone(pid: int) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SAFETY_TIMEOUT
    while loop.time() < deadline:
        if process_gone(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_json_stdout_is_parsed_and_arguments_arrive_on_stdin(runner: ProcessRunner) -> None:
    tool = python_tool("""
        import json, sys
        args = json.load(sys.stdin)
        print(json.dumps({"echo": args, "n": 3}))
    """)
    chunks, result = await collect(runner.execute(tool, limits(), {"text": "héllo", "k": [1, 2]}))
    assert result.exit_code == 0
    assert not result.timed_out and not result.truncated and not result.replayed
    assert result.output == {"echo": {"text": "héllo", "k": [1, 2]}, "n": 3}
    assert b'"n": 3' in stdout_of(chunks)
    assert result.usage.cpu_seconds > 0
    assert result.usage.max_rss_bytes > 0
    assert result.usage.wall_seconds > 0


async def test_text_stdout_stays_text_and_stderr_is_captured(runner: ProcessRunner) -> None:
    tool = python_tool("""
        import sys
        print("not json {")
        print("oops", file=sys.stderr)
        sys.exit(3)
    """)
    chunks, result = await collect(runner.execute(tool, limits(), {}))
    assert result.exit_code == 3
    assert result.output == "not json {\n"
    assert result.stderr == "oops\n"
    assert {c.stream for c in chunks} == {Stream.STDOUT, Stream.STDERR}


async def test_chunks_stream_in_order_as_they_are_written(runner: ProcessRunner) -> None:
    # The tool writes a line, then waits for the test to answer it: the test can only answer if the line
    # reached it while the tool was still running. No timing involved.
    tool = python_tool("""
        import os, sys, time
        for i in range(1, 4):
            print(f"line {i}", flush=True)
            print(f"err {i}", file=sys.stderr, flush=True)
            while not os.path.exists(f"go-{i}"):
                time.sleep(0.01)
        print(os.getcwd(), flush=True)
    """)
    chunks: list[Chunk] = []
    cwd: Path | None = None
    async with aclosing(runner.execute(tool, limits(), {})) as events:
        async for event in events:
            if isinstance(event, Chunk):
                chunks.append(event)
                if event.stream is Stream.STDOUT and event.data.startswith(b"line "):
                    n = int(event.data.split()[1])
                    if cwd is None:
                        cwd = _only_scratch_dir(runner)
                    (cwd / f"go-{n}").touch()
            else:
                result = event
    assert result.exit_code == 0
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
    out = stdout_of(chunks).decode().splitlines()
    assert out[:3] == ["line 1", "line 2", "line 3"]
    err = b"".join(c.data for c in chunks if c.stream is Stream.STDERR).decode().splitlines()
    assert err == ["err 1", "err 2", "err 3"]
    assert all(len(c.data) <= 16 * 1024 for c in chunks)


def _only_scratch_dir(runner: ProcessRunner) -> Path:
    (entry,) = entries(runner.config.scratch_root)
    return entry


async def test_wall_time_kills_the_process(runner: ProcessRunner) -> None:
    _, result = await collect(
        runner.execute(ProcessSpec(command=("sleep", "30")), limits(wall_time_seconds=1), {})
    )
    assert result.timed_out
    assert result.exit_code == -signal.SIGKILL
    assert result.usage.wall_seconds < 30


async def test_output_cap_truncates_and_kills(runner: ProcessRunner) -> None:
    tool = python_tool("""
        import sys
        block = b"x" * 65536
        for _ in range(160):
            sys.stdout.buffer.write(block)
        sys.stdout.flush()
    """)
    chunks, result = await collect(runner.execute(tool, limits(output_bytes=64 * 1024), {}))
    assert result.truncated
    assert sum(len(c.data) for c in chunks) == 64 * 1024
    assert result.exit_code == -signal.SIGKILL
    assert isinstance(result.output, str) and len(result.output) == 64 * 1024


async def test_output_cap_counts_stderr_too(runner: ProcessRunner) -> None:
    tool = python_tool("""
        import sys
        sys.stderr.write("e" * 3000)
        sys.stderr.flush()
        sys.stdout.write("o" * 3000)
    """)
    chunks, result = await collect(runner.execute(tool, limits(output_bytes=4000), {}))
    assert result.truncated
    assert sum(len(c.data) for c in chunks) == 4000


async def test_memory_cap_stops_a_large_allocation(runner: ProcessRunner) -> None:
    tool = python_tool("""
        data = bytearray(1024 * 1024 * 1024)
        print("allocated", len(data))
    """)
    _, result = await collect(runner.execute(tool, limits(memory_bytes=256 * 1024 * 1024), {}))
    assert result.exit_code != 0
    assert "MemoryError" in result.stderr
    assert result.output is None


async def test_cpu_cap_kills_a_busy_loop(runner: ProcessRunner) -> None:
    tool = python_tool("""
        while True:
            pass
    """)
    _, result = await collect(runner.execute(tool, limits(cpu_seconds=1), {}))
    assert not result.timed_out
    assert result.exit_code in (-signal.SIGXCPU, -signal.SIGKILL)
    assert result.usage.cpu_seconds > 0


async def test_each_call_gets_a_fresh_scratch_dir_removed_afterwards(
    runner: ProcessRunner, scratch_root: Path
) -> None:
    tool = python_tool("""
        import json, os
        before = os.listdir(".")
        open("left-behind.txt", "w").write("x")
        print(json.dumps({"cwd": os.getcwd(), "home": os.environ["HOME"], "before": before}))
    """)
    _, first = await collect(runner.execute(tool, limits(), {}))
    _, second = await collect(runner.execute(tool, limits(), {}))
    assert first.output["before"] == [] and second.output["before"] == []
    assert first.output["cwd"] != second.output["cwd"]
    for output in (first.output, second.output):
        assert output["home"] == output["cwd"]
        assert Path(output["cwd"]).parent == resolved(scratch_root)
        assert not exists(Path(output["cwd"]))
    assert entries(scratch_root) == []


async def test_environment_is_cleared(runner: ProcessRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AF_HOST_SECRET", "do-not-leak")
    tool = python_tool(
        """
        import json, os
        print(json.dumps(dict(os.environ)))
        """,
        TOOL_SETTING="on",
    )
    _, result = await collect(runner.execute(tool, limits(), {}))
    env = result.output
    assert "AF_HOST_SECRET" not in env
    assert set(env) == {"PATH", "HOME", "LANG", "TOOL_SETTING"}
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["LANG"] == "C.UTF-8"
    assert env["TOOL_SETTING"] == "on"


SPAWNS_A_SLEEPER = """
    import subprocess, sys, time
    child = subprocess.Popen(["sleep", "1000"])
    print(child.pid, flush=True)
    time.sleep(1000)
"""


async def test_cancelling_the_consumer_kills_the_process_group(
    runner: ProcessRunner, scratch_root: Path
) -> None:
    child_pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def consume() -> None:
        async for event in runner.execute(python_tool(SPAWNS_A_SLEEPER), limits(), {}):
            if isinstance(event, Chunk) and not child_pid.done():
                child_pid.set_result(int(event.data.split()[0]))

    task = asyncio.create_task(consume())
    pid = await asyncio.wait_for(child_pid, SAFETY_TIMEOUT)
    assert not process_gone(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(pid)
    assert entries(scratch_root) == []


async def test_closing_the_iterator_kills_the_process_group(
    runner: ProcessRunner, scratch_root: Path
) -> None:
    async with aclosing(runner.execute(python_tool(SPAWNS_A_SLEEPER), limits(), {})) as events:
        first = await asyncio.wait_for(anext(events), SAFETY_TIMEOUT)
    assert isinstance(first, Chunk)
    pid = int(first.data.split()[0])
    assert await wait_gone(pid)
    assert entries(scratch_root) == []


async def test_background_children_do_not_outlive_a_finished_tool(runner: ProcessRunner) -> None:
    tool = python_tool("""
        import subprocess
        child = subprocess.Popen(["sleep", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(child.pid)
    """)
    _, result = await collect(runner.execute(tool, limits(), {}))
    assert result.exit_code == 0
    assert await wait_gone(int(result.output))


async def test_a_missing_program_is_exit_code_127(runner: ProcessRunner) -> None:
    spec = ProcessSpec(command=("/nonexistent/tool-binary",))
    _, result = await collect(runner.execute(spec, limits(), {}))
    assert result.exit_code == 127
    assert "cannot start" in result.stderr


async def test_a_tool_that_ignores_stdin_still_finishes(runner: ProcessRunner) -> None:
    spec = ProcessSpec(command=("true",))
    _, result = await collect(runner.execute(spec, limits(), {"blob": "x" * (1024 * 1024)}))
    assert result.exit_code == 0
    assert result.output is None
