from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agentflow.models.v1 import models_pb2
from agentflow_model_gateway.config import DEFAULT_MODELS, ModelConfig
from agentflow_model_gateway.gateway import ModelGateway
from agentflow_model_gateway.routing import Router
from agentflow_model_gateway.servicer import ModelServicer
from agentflow_model_gateway.store import metadata
from agentflow_runtime import context
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.db import Database
from agentflow_runtime.protojson import dict_from_struct, struct_from_dict

NO_CONTEXT: Any = None
MESSAGES = [
    models_pb2.Message(role=models_pb2.ROLE_SYSTEM, content="Be short."),
    models_pb2.Message(role=models_pb2.ROLE_USER, content="Write about gardens"),
]


@pytest.fixture
async def servicer(tmp_path: Path) -> AsyncIterator[ModelServicer]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'model-gateway.db'}")
    await db.create_all(metadata)
    yield ModelServicer(ModelGateway(Router(DEFAULT_MODELS), db), AuditSink(None))
    await db.dispose()


async def test_list_models(servicer: ModelServicer) -> None:
    response = await servicer.ListModels(models_pb2.ListModelsRequest(), NO_CONTEXT)
    assert [(m.name, m.provider) for m in response.models] == [("models/local", "local")]


async def test_complete_replays_by_key(servicer: ModelServicer) -> None:
    request = models_pb2.CompleteRequest(model="models/local", messages=MESSAGES, idempotency_key="k1")
    with context.bound(context.CallContext(tenant="acme")):
        first = await servicer.Complete(request, NO_CONTEXT)
        second = await servicer.Complete(request, NO_CONTEXT)
    assert first.message.role == models_pb2.ROLE_ASSISTANT
    assert first.message.content.startswith("Draft about gardens")
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens > 0
    assert first.model == "models/local"
    assert not first.replayed and second.replayed
    assert second.message.content == first.message.content


async def test_stream_and_embed(servicer: ModelServicer) -> None:
    request = models_pb2.StreamCompleteRequest(model="models/local", messages=MESSAGES)
    chunks = [chunk async for chunk in servicer.StreamComplete(request, NO_CONTEXT)]
    complete = await servicer.Complete(
        models_pb2.CompleteRequest(model="models/local", messages=MESSAGES), NO_CONTEXT
    )
    assert "".join(c.delta for c in chunks) == complete.message.content
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage == complete.usage
    assert all(not c.finish_reason for c in chunks[:-1])
    embedded = await servicer.Embed(
        models_pb2.EmbedRequest(model="models/local", texts=["a b", "c"]), NO_CONTEXT
    )
    assert [len(e.values) for e in embedded.embeddings] == [256, 256]
    assert embedded.usage.input_tokens == 3


async def test_tools_and_tool_calls_cross_the_servicer(tmp_path: Path) -> None:
    calls = [{"name": "count", "arguments": {"n": 2}}]
    script = ({"when": {"agent": "clerk"}, "reply": {"tool_calls": calls}},)
    model = ModelConfig("scripted", "local", "scripted", script=script)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'tools.db'}")
    await db.create_all(metadata)
    servicer = ModelServicer(ModelGateway(Router([model]), db), AuditSink(None))
    request = models_pb2.CompleteRequest(
        model="models/scripted",
        messages=[models_pb2.Message(role=models_pb2.ROLE_USER, content="count")],
        tools=[models_pb2.ToolDefinition(name="count", parameters=struct_from_dict({"type": "object"}))],
        agent="clerk",
    )
    with context.bound(context.CallContext(tenant="acme")):
        reply = await servicer.Complete(request, NO_CONTEXT)
        call = reply.message.tool_calls[0]
        answered = models_pb2.CompleteRequest(
            model="models/scripted",
            messages=[
                *request.messages,
                reply.message,
                models_pb2.Message(role=models_pb2.ROLE_TOOL, content='{"n": 2}', tool_call_id=call.id),
            ],
            agent="other",
        )
        final = await servicer.Complete(answered, NO_CONTEXT)
    await db.dispose()
    assert reply.finish_reason == "tool_calls"
    assert (call.id, call.name, dict_from_struct(call.arguments)) == ("call_1_1", "count", {"n": 2})
    assert final.finish_reason == "stop"
    assert not final.message.tool_calls
