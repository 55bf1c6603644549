from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import pytest
from agentflow_runtime.errors import FailedPrecondition
from agentflow_tool_sandbox.events import Chunk, Event, Stream
from agentflow_tool_sandbox.executions import Executions
from agentflow_tool_sandbox.executor import ProcessRunner
from agentflow_tool_sandbox.spec import Limits, ProcessSpec, ToolSpec
from agentflow_tool_sandbox.store import ExecutionStore
from sqlalchemy.ext.asyncio import AsyncEngine

from .conftest import collect, limits, python_tool


class CountingRunner:
    """The process backend, counting how often it really runs something."""

    def __init__(self, inner: ProcessRunner) -> None:
        self.inner = inner
        self.runs = 0

    async def execute(
        self, spec: ProcessSpec, limits: Limits, arguments: Mapping[str, Any]
    ) -> AsyncGenerator[Event, None]:
        self.runs += 1
        async for event in self.inner.execute(spec, limits, arguments):
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


async def test_an_abandoned_execution_is_not_recorded(
    executions: Executions, counting: CountingRunner
) -> None:
    events = executions.execute("acme", TOOL, {"n": 1}, "k")
    first = await anext(events)
    assert isinstance(first, Chunk)
    await events.aclose()
    _, result = await collect(executions.execute("acme", TOOL, {"n": 1}, "k"))
    assert not result.replayed
    assert counting.runs == 2


def _text(chunks: list[Chunk], stream: Stream) -> bytes:
    return b"".join(c.data for c in chunks if c.stream is stream)
