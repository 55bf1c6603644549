from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from agentflow_runtime.errors import FailedPrecondition, Unavailable
from agentflow_tool_sandbox.arguments import args_digest
from agentflow_tool_sandbox.events import Chunk, Event, Result, Stream
from agentflow_tool_sandbox.executions import Executions
from agentflow_tool_sandbox.executor import ProcessRunner
from agentflow_tool_sandbox.spec import NO_PERMISSIONS, Limits, Permissions, ProcessSpec, ToolSpec
from agentflow_tool_sandbox.store import RUNNING, ExecutionStore, Marker
from sqlalchemy.ext.asyncio import AsyncEngine

from .conftest import collect, limits, python_tool


class CountingRunner:
    """The process backend, counting how often it really runs something."""

    def __init__(self, inner: ProcessRunner) -> None:
        self.inner = inner
        self.runs = 0

    name = "counting"

    async def execute(
        self,
        spec: ProcessSpec,
        limits: Limits,
        arguments: Mapping[str, Any],
        *,
        permissions: Permissions = NO_PERMISSIONS,
        tool_id: str = "",
    ) -> AsyncGenerator[Event, None]:
        self.runs += 1
        async for event in self.inner.execute(
            spec, limits, arguments, permissions=permissions, tool_id=tool_id
        ):
            yield event


TOOL = ToolSpec(
    tool_id="noisy",
    description="writes to both streams",
    input_schema={},
    process=python_tool("""
        import json, sys
        args = json.load(sys.stdin)
        print("working", file=sys.stderr, flush=True)
        print(json.dumps({"got": args["n"]}))
    """),
    limits=limits(),
)


@pytest.fixture
def counting(runner: ProcessRunner) -> CountingRunner:
    return CountingRunner(runner)


@pytest.fixture
def executions(counting: CountingRunner, engine: AsyncEngine) -> Executions:
    return Executions(counting, ExecutionStore(engine))


async def test_a_repeated_key_replays_the_recorded_result(
    executions: Executions, counting: CountingRunner
) -> None:
    chunks, first = await collect(executions.execute("acme", TOOL, {"n": 1}, "run-1/step-a"))
    assert not first.replayed
    replay_chunks, second = await collect(executions.execute("acme", TOOL, {"n": 1}, "run-1/step-a"))
    assert counting.runs == 1
    assert second.replayed
    assert second.output == first.output == {"got": 1}
    assert (second.exit_code, second.stderr, second.usage) == (first.exit_code, first.stderr, first.usage)
    assert [(c.seq, c.stream) for c in replay_chunks] == [(1, Stream.STDOUT), (2, Stream.STDERR)]
    for stream in Stream:
        assert _text(replay_chunks, stream) == _text(chunks, stream)


async def test_keys_are_per_tenant_and_no_key_always_runs(
    executions: Executions, counting: CountingRunner
) -> None:
    await collect(executions.execute("acme", TOOL, {"n": 1}, "k"))
    _, other_tenant = await collect(executions.execute("other", TOOL, {"n": 1}, "k"))
    assert not other_tenant.replayed
    await collect(executions.execute("acme", TOOL, {"n": 1}))
    await collect(executions.execute("acme", TOOL, {"n": 1}))
    assert counting.runs == 4


async def test_a_key_reused_for_other_arguments_is_refused(executions: Executions) -> None:
    await collect(executions.execute("acme", TOOL, {"n": 1}, "k"))
    with pytest.raises(FailedPrecondition) as caught:
        await collect(executions.execute("acme", TOOL, {"n": 2}, "k"))
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_an_abandoned_keyed_execution_runs_to_completion_and_is_replayed(
    executions: Executions, counting: CountingRunner
) -> None:
    # The caller went away (a worker SIGKILLed mid-call): the tool still finishes and is recorded once, so
    # the retry with the same key gets its result instead of running the side effect a second time.
    events = executions.execute("acme", TOOL, {"n": 1}, "k")
    first = await anext(events)
    assert isinstance(first, Chunk)
    await events.aclose()
    chunks, result = await collect(executions.execute("acme", TOOL, {"n": 1}, "k"))
    assert result.replayed
    assert result.output == {"got": 1}
    assert _text(chunks, Stream.STDERR) == b"working\n"
    assert counting.runs == 1


async def test_an_abandoned_unkeyed_execution_is_killed_and_not_recorded(
    executions: Executions, counting: CountingRunner, tmp_path: Path
) -> None:
    marker = tmp_path / "after"
    tool = _slow_tool(marker)
    events = executions.execute("acme", tool, {})
    assert isinstance(await anext(events), Chunk)
    await events.aclose()
    await asyncio.sleep(1.0)
    assert not marker.exists()
    assert counting.runs == 1


async def test_a_repeated_key_while_running_attaches_instead_of_running_again(
    executions: Executions, counting: CountingRunner, tmp_path: Path
) -> None:
    tool = _slow_tool(tmp_path / "after")
    first = asyncio.create_task(collect(executions.execute("acme", tool, {}, "k")))
    await _eventually(lambda: counting.runs > 0)
    second_chunks, second = await collect(executions.execute("acme", tool, {}, "k"))
    first_chunks, first_result = await first
    assert counting.runs == 1
    assert not first_result.replayed and second.replayed
    assert second.output == first_result.output == {"done": True}
    assert [c.data for c in second_chunks] == [c.data for c in first_chunks]


async def test_a_key_running_in_a_live_instance_is_waited_for(
    counting: CountingRunner, engine: AsyncEngine, tmp_path: Path
) -> None:
    store = ExecutionStore(engine)
    one = Executions(counting, store, heartbeat_seconds=0.1, stale_seconds=5)
    two = Executions(counting, store, heartbeat_seconds=0.1, stale_seconds=5)
    tool = _slow_tool(tmp_path / "after")
    first = asyncio.create_task(collect(one.execute("acme", tool, {}, "k")))
    await _eventually_marked(store)
    _, waited = await collect(two.execute("acme", tool, {}, "k"))
    assert waited.replayed and waited.output == {"done": True}
    assert (await first)[1].output == {"done": True}
    assert counting.runs == 1


async def test_a_stale_marker_is_taken_over_and_re_executed(
    counting: CountingRunner, engine: AsyncEngine
) -> None:
    # The sandbox instance that started the key died (no heartbeat): at-least-once, the tool runs again.
    store = ExecutionStore(engine)
    old = datetime.now(UTC) - timedelta(seconds=60)
    await store.claim(Marker("acme", "k", "noisy", args_digest({"n": 1}), RUNNING, "sandbox-dead", old))
    executions = Executions(counting, store, stale_seconds=5)
    _, result = await collect(executions.execute("acme", TOOL, {"n": 1}, "k"))
    assert not result.replayed and result.output == {"got": 1}
    assert counting.runs == 1
    assert await store.marker("acme", "k") is None


async def test_cancel_kills_a_running_keyed_execution_and_records_it(
    executions: Executions, counting: CountingRunner, tmp_path: Path
) -> None:
    marker = tmp_path / "after"
    tool = _slow_tool(marker, seconds=3)
    running = asyncio.create_task(collect(executions.execute("acme", tool, {}, "k")))
    await _eventually(lambda: counting.runs > 0)
    await asyncio.sleep(0.3)
    assert await executions.cancel("acme", "slow", "k") == "cancelled"
    _, result = await running
    assert result.cancelled and not result.succeeded
    await asyncio.sleep(2.0)
    assert not marker.exists(), "the process group was killed before its side effect"
    _, again = await collect(executions.execute("acme", tool, {}, "k"))
    assert again.replayed and again.cancelled
    assert counting.runs == 1
    assert await executions.cancel("acme", "slow", "k") == "cancelled"


async def test_cancel_before_start_means_the_key_never_runs(
    executions: Executions, counting: CountingRunner
) -> None:
    assert await executions.cancel("acme", "noisy", "k") == "cancelled"
    _, result = await collect(executions.execute("acme", TOOL, {"n": 1}, "k"))
    assert result.cancelled and result.replayed
    assert counting.runs == 0


async def test_cancel_of_a_finished_key_keeps_its_result(executions: Executions) -> None:
    await collect(executions.execute("acme", TOOL, {"n": 1}, "k"))
    assert await executions.cancel("acme", "noisy", "k") == "finished"
    _, result = await collect(executions.execute("acme", TOOL, {"n": 1}, "k"))
    assert result.output == {"got": 1} and not result.cancelled


async def test_a_cancel_reaches_an_execution_owned_by_another_instance(
    counting: CountingRunner, engine: AsyncEngine, tmp_path: Path
) -> None:
    store = ExecutionStore(engine)
    owner = Executions(counting, store, heartbeat_seconds=0.1)
    other = Executions(counting, store, heartbeat_seconds=0.1)
    tool = _slow_tool(tmp_path / "after", seconds=3)
    running = asyncio.create_task(collect(owner.execute("acme", tool, {}, "k")))
    await _eventually_marked(store)
    assert await other.cancel("acme", "slow", "k") == "cancelled"
    _, result = await running
    assert result.cancelled


async def _eventually(check: Callable[[], bool]) -> None:
    for _ in range(3000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("gave up waiting")


async def _eventually_marked(store: ExecutionStore) -> None:
    for _ in range(3000):
        if await store.marker("acme", "k") is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("gave up waiting")


def _slow_tool(marker: Path, seconds: float = 0.6) -> ToolSpec:
    """Prints, sleeps, then creates `marker` (its side effect) and prints its output."""
    return ToolSpec(
        tool_id="slow",
        description="a side effect after a pause",
        input_schema={},
        process=python_tool(
            f"""
            import json, pathlib, sys, time
            print("start", file=sys.stderr, flush=True)
            time.sleep({seconds})
            pathlib.Path({str(marker)!r}).write_text("x")
            print(json.dumps({{"done": True}}), flush=True)
            """
        ),
        limits=limits(),
    )


def _text(chunks: list[Chunk], stream: Stream) -> bytes:
    return b"".join(c.data for c in chunks if c.stream is stream)


async def test_close_kills_what_is_still_running_without_recording_it(
    executions: Executions, counting: CountingRunner, engine: AsyncEngine, tmp_path: Path
) -> None:
    marker = tmp_path / "after"
    running = asyncio.create_task(collect(executions.execute("acme", _slow_tool(marker, seconds=3), {}, "k")))
    await _eventually(lambda: counting.runs > 0)
    await executions.close(grace=0.2)
    with pytest.raises(Unavailable):
        await running
    await asyncio.sleep(3.5)
    assert not marker.exists(), "the process group died with the sandbox"
    store = ExecutionStore(engine)
    assert await store.get("acme", "k") is None
    assert await store.marker("acme", "k") is not None, "left to go stale, so a retry re-runs the tool"


async def test_a_cancel_right_after_the_start_still_kills(
    executions: Executions, counting: CountingRunner, tmp_path: Path
) -> None:
    # White-box: the cancel lands after the execution was registered, before its task first ran.
    marker = tmp_path / "after"
    live = executions._start("acme", _slow_tool(marker, seconds=2), {}, "k", args_digest({}))
    assert await executions.cancel("acme", "slow", "k") == "cancelled"
    assert live.finished
    result = live.events[-1]
    assert isinstance(result, Result) and result.cancelled
    await asyncio.sleep(2.5)
    assert not marker.exists()
