"""MeshStepCalls against in-process fakes: keys carry the journaled attempt; stop reaches tool executions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from agentflow.models.v1 import models_pb2, models_pb2_grpc
from agentflow.tools.v1 import tools_pb2, tools_pb2_grpc
from agentflow_worker.calls import idempotency_key
from agentflow_worker.mesh_calls import MeshStepCalls

from .conftest import new_run, plan_of, step


class FakeTools(tools_pb2_grpc.ToolServiceServicer):
    def __init__(self) -> None:
        self.executed: list[tuple[str, str]] = []
        self.cancelled: list[tuple[str, str]] = []

    async def ExecuteTool(
        self, request: tools_pb2.ExecuteToolRequest, ctx: Any
    ) -> AsyncIterator[tools_pb2.ExecuteToolResponse]:
        self.executed.append((request.name, request.idempotency_key))
        yield tools_pb2.ExecuteToolResponse(result=tools_pb2.ToolResult())

    async def CancelToolExecution(
        self, request: tools_pb2.CancelToolExecutionRequest, ctx: Any
    ) -> tools_pb2.CancelToolExecutionResponse:
        self.cancelled.append((request.name, request.idempotency_key))
        return tools_pb2.CancelToolExecutionResponse(state="cancelled")


class FakeModels(models_pb2_grpc.ModelServiceServicer):
    def __init__(self) -> None:
        self.keys: list[str] = []

    async def Complete(self, request: models_pb2.CompleteRequest, ctx: Any) -> models_pb2.CompleteResponse:
        self.keys.append(request.idempotency_key)
        return models_pb2.CompleteResponse(message=models_pb2.Message(content="hi"))


class OneChannel:
    """Stands in for Channels: every service is the one in-process server."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    def get(self, _service: str) -> grpc.aio.Channel:
        return self.channel


@pytest.fixture
async def mesh() -> AsyncIterator[tuple[MeshStepCalls, FakeTools, FakeModels]]:
    tools, models = FakeTools(), FakeModels()  # type: ignore[abstract]
    server = grpc.aio.server()
    tools_pb2_grpc.add_ToolServiceServicer_to_server(tools, server)
    models_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield MeshStepCalls(OneChannel(channel)), tools, models  # type: ignore[arg-type]
    await server.stop(None)


async def _no_emit(*_args: Any) -> None:
    return None


async def test_calls_are_keyed_by_run_step_and_attempt(
    mesh: tuple[MeshStepCalls, FakeTools, FakeModels],
) -> None:
    calls, tools, models = mesh
    run = new_run(plan_of(step("a"), step("b", "model")))
    await calls.tool(run, "a", {"tool": "echo", "arguments": {}}, _no_emit, attempt=2)
    await calls.model(run, "b", {"prompt": "hello"}, _no_emit, attempt=3)
    assert tools.executed == [("tools/echo", f"{run.run_id}/a/2")]
    assert models.keys == [f"{run.run_id}/b/3"]
    assert idempotency_key(run, "a", 2) == f"{run.run_id}/a/2"


async def test_stop_cancels_the_tool_execution_of_that_attempt(
    mesh: tuple[MeshStepCalls, FakeTools, FakeModels],
) -> None:
    calls, tools, _ = mesh
    run = new_run(plan_of(step("a")))
    await calls.stop(run, "a", "tool", {"tool": "echo"}, 4)
    await calls.stop(run, "b", "model", {"prompt": "x"}, 1)  # nothing to stop: ends with its caller
    assert tools.cancelled == [("tools/echo", f"{run.run_id}/a/4")]
