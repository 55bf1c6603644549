from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentflow.tools.v1 import tools_pb2, tools_pb2_grpc
from agentflow_runtime import context
from agentflow_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from agentflow_runtime.protojson import py_from_value, struct_from_dict
from agentflow_tool_sandbox.catalog import load_catalog
from agentflow_tool_sandbox.executions import Executions
from agentflow_tool_sandbox.executor import ProcessRunner
from agentflow_tool_sandbox.registry import Registry
from agentflow_tool_sandbox.servicer import ToolServicer
from agentflow_tool_sandbox.store import ExecutionStore, ToolStore
from sqlalchemy.ext.asyncio import AsyncEngine

REPO_CATALOG = Path(__file__).resolve().parents[3] / "catalog" / "tools"


class FakeAudit:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, dict[str, Any]]] = []

    def record(
        self, action: str, resource: str, outcome: str = "ok", details: dict[str, Any] | None = None
    ) -> None:
        self.events.append((action, resource, outcome, details or {}))


@pytest.fixture
def audit() -> FakeAudit:
    return FakeAudit()


@pytest.fixture
def servicer(runner: ProcessRunner, engine: AsyncEngine, audit: FakeAudit) -> ToolServicer:
    registry = Registry(ToolStore(engine), load_catalog(REPO_CATALOG))
    return ToolServicer(registry, Executions(runner, ExecutionStore(engine)), audit)  # type: ignore[arg-type]


CTX: Any = None


async def execute(servicer: ToolServicer, **fields: Any) -> list[tools_pb2.ExecuteToolResponse]:
    return [r async for r in servicer.ExecuteTool(tools_pb2.ExecuteToolRequest(**fields), CTX)]


async def test_execute_streams_chunks_then_the_result_and_audits(
    servicer: ToolServicer, audit: FakeAudit
) -> None:
    responses = await execute(
        servicer,
        name="tools/word-count",
        arguments=struct_from_dict({"text": "a b c"}),
        run="runs/r1",
        step_id="count",
        idempotency_key="runs/r1/count",
    )
    kinds = [r.WhichOneof("event") for r in responses]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"chunk"}
    result = responses[-1].result
    assert result.exit_code == 0
    assert py_from_value(result.output) == {"words": 3, "chars": 5}
    assert responses[0].chunk.seq == 1
    assert responses[0].chunk.stream == tools_pb2.OUTPUT_STREAM_STDOUT
    ((action, resource, outcome, details),) = audit.events
    assert (action, resource, outcome) == ("tool.execute", "tools/word-count", "ok")
    assert details["run"] == "runs/r1" and details["step_id"] == "count"
    assert details["exit_code"] == 0 and details["replayed"] is False
    assert len(details["args_digest"]) == 64

    again = await execute(
        servicer,
        name="tools/word-count",
        arguments=struct_from_dict({"text": "a b c"}),
        idempotency_key="runs/r1/count",
    )
    assert again[-1].result.replayed
    assert again[0].chunk.data == responses[0].chunk.data
    assert audit.events[-1][3]["replayed"] is True


async def test_unknown_tool_bad_name_and_bad_arguments(servicer: ToolServicer) -> None:
    with pytest.raises(NotFound):
        await execute(servicer, name="tools/nope")
    with pytest.raises(InvalidArgument):
        await execute(servicer, name="word-count")
    with pytest.raises(InvalidArgument) as caught:
        await execute(servicer, name="tools/word-count", arguments=struct_from_dict({"text": 3}))
    assert caught.value.violations == [("arguments.text", "must be of type string")]


async def test_crud_through_the_servicer(servicer: ToolServicer) -> None:
    tool = tools_pb2.Tool(
        description="says hi",
        process=tools_pb2.ProcessSpec(command=["echo", "hi"]),
        input_schema=struct_from_dict({"type": "object"}),
    )
    with context.bound(context.CallContext(tenant="acme")):
        created = await servicer.CreateTool(tools_pb2.CreateToolRequest(tool_id="hello", tool=tool), CTX)
        assert created.name == "tools/hello" and created.origin == "api"
        assert created.limits.wall_time_seconds == 30 and created.limits.output_bytes == 1024 * 1024
        fetched = await servicer.GetTool(tools_pb2.GetToolRequest(name="tools/hello"), CTX)
        assert fetched == created
        page = await servicer.ListTools(tools_pb2.ListToolsRequest(page_size=2), CTX)
        assert [t.name for t in page.tools] == ["tools/hello", "tools/ticker"]
        rest = await servicer.ListTools(
            tools_pb2.ListToolsRequest(page_size=2, page_token=page.next_page_token), CTX
        )
        assert [t.name for t in rest.tools] == ["tools/word-count"] and not rest.next_page_token
        responses = [
            r async for r in servicer.ExecuteTool(tools_pb2.ExecuteToolRequest(name="tools/hello"), CTX)
        ]
        assert py_from_value(responses[-1].result.output) == "hi\n"
        with pytest.raises(FailedPrecondition):
            await servicer.DeleteTool(tools_pb2.DeleteToolRequest(name="tools/ticker"), CTX)
        await servicer.DeleteTool(tools_pb2.DeleteToolRequest(name="tools/hello"), CTX)
    with pytest.raises(NotFound):
        await servicer.GetTool(tools_pb2.GetToolRequest(name="tools/hello"), CTX)


@pytest.fixture
async def stub(servicer: ToolServicer) -> AsyncIterator[tools_pb2_grpc.ToolServiceAsyncStub]:
    server = grpc.aio.server()
    tools_pb2_grpc.add_ToolServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield tools_pb2_grpc.ToolServiceStub(channel)
    await server.stop(None)


async def test_ticker_streams_over_grpc(stub: tools_pb2_grpc.ToolServiceAsyncStub) -> None:
    request = tools_pb2.ExecuteToolRequest(
        name="tools/ticker", arguments=struct_from_dict({"count": 3, "interval": 0.01})
    )
    responses = [r async for r in stub.ExecuteTool(request, timeout=60)]
    lines = [r.chunk.data for r in responses if r.WhichOneof("event") == "chunk"]
    assert b"".join(lines).decode().splitlines() == ["tick 1", "tick 2", "tick 3"]
    assert responses[-1].result.exit_code == 0


async def test_a_client_cancel_kills_the_tool_and_audits_it(
    stub: tools_pb2_grpc.ToolServiceAsyncStub, audit: FakeAudit
) -> None:
    request = tools_pb2.ExecuteToolRequest(
        name="tools/ticker", arguments=struct_from_dict({"count": 1000, "interval": 0.05})
    )
    call = stub.ExecuteTool(request, timeout=60)
    first = await call.read()
    assert isinstance(first, tools_pb2.ExecuteToolResponse)
    assert first.chunk.data == b"tick 1\n"
    call.cancel()
    for _ in range(1200):
        if audit.events:
            break
        await asyncio.sleep(0.05)
    assert audit.events[-1][2] == "cancelled"


async def test_a_keyed_call_outlives_its_stream_until_cancel_tool_execution(
    stub: tools_pb2_grpc.ToolServiceAsyncStub, audit: FakeAudit
) -> None:
    request = tools_pb2.ExecuteToolRequest(
        name="tools/ticker",
        arguments=struct_from_dict({"count": 1000, "interval": 0.05}),
        idempotency_key="run-1/a/1",
    )
    call = stub.ExecuteTool(request, timeout=60)
    assert _reply(await call.read()).chunk.data == b"tick 1\n"
    call.cancel()
    # Still running: a retry with the key attaches and sees ticks the first stream never read.
    again = stub.ExecuteTool(request, timeout=60)
    seen = [_reply(await again.read()).chunk.data for _ in range(3)]
    assert seen[:2] == [b"tick 1\n", b"tick 2\n"]
    cancel = tools_pb2.CancelToolExecutionRequest(name="tools/ticker", idempotency_key="run-1/a/1")
    reply = await stub.CancelToolExecution(cancel, timeout=60)
    assert reply.state == "cancelled"
    rest: list[tools_pb2.ExecuteToolResponse] = []
    while isinstance(item := await again.read(), tools_pb2.ExecuteToolResponse):
        rest.append(item)
    assert rest[-1].result.exit_code < 0 and rest[-1].result.replayed
    replayed = [r async for r in stub.ExecuteTool(request, timeout=60)]
    assert replayed[-1].result.exit_code == rest[-1].result.exit_code
    assert any(e[0] == "tool.cancel_execution" for e in audit.events)


async def test_cancel_tool_execution_needs_a_key(servicer: ToolServicer) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await servicer.CancelToolExecution(tools_pb2.CancelToolExecutionRequest(name="tools/ticker"), CTX)
    assert caught.value.violations[0][0] == "idempotency_key"


def _reply(item: object) -> tools_pb2.ExecuteToolResponse:
    assert isinstance(item, tools_pb2.ExecuteToolResponse)
    return item
