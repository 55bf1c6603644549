from __future__ import annotations

from typing import Any

import pytest
from agentflow.memory.v1 import memory_pb2
from agentflow_memory.names import memory_id_from_name
from agentflow_memory.servicer import MemoryServicer
from agentflow_runtime import context
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.errors import InvalidArgument, NotFound
from agentflow_runtime.protojson import struct_from_dict

from .conftest import Book

NO_CONTEXT: Any = None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "m1",
        "memories/",
        "memories/Upper",
        "memories/-x",
        "memories/a/b",
        "memories/" + "a" * 129,
        "runs/a",
    ],
)
def test_bad_names_are_invalid(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        memory_id_from_name(name)
    assert caught.value.violations[0][0] == "name"


def test_good_names() -> None:
    assert memory_id_from_name("memories/a") == "a"
    assert memory_id_from_name("memories/0.x_y-z") == "0.x_y-z"
    assert memory_id_from_name("memories/" + "a" * 128) == "a" * 128


async def test_memory_service_round_trip(env: Book) -> None:
    servicer = MemoryServicer(env.book, AuditSink(None))
    memory = memory_pb2.Memory(
        name="memories/cat-1",
        subject="alice",
        namespace="pets",
        text="Kittens and cats purr",
        labels={"kind": "pet"},
        ttl_seconds=3600,
        metadata=struct_from_dict({"source": "chat", "n": 2}),
    )
    with context.bound(context.CallContext(tenant="acme", caller="worker")):
        stored = await servicer.PutMemory(memory_pb2.PutMemoryRequest(memory=memory), NO_CONTEXT)
        assert stored.name == "memories/cat-1"
        assert stored.ttl_seconds == 0
        assert stored.HasField("expire_time")
        assert stored.metadata["n"] == 2
        fetched = await servicer.GetMemory(memory_pb2.GetMemoryRequest(name="memories/cat-1"), NO_CONTEXT)
        assert fetched == stored
        found = await servicer.QueryMemories(
            memory_pb2.QueryMemoriesRequest(text="cats", labels={"kind": "pet"}), NO_CONTEXT
        )
        assert [r.memory.name for r in found.results] == ["memories/cat-1"]
        assert found.results[0].score > 0
        erased = await servicer.EraseMemories(memory_pb2.EraseMemoriesRequest(subject="alice"), NO_CONTEXT)
        assert erased.erased_count == 1
        with pytest.raises(NotFound):
            await servicer.GetMemory(memory_pb2.GetMemoryRequest(name="memories/cat-1"), NO_CONTEXT)
    with context.bound(context.CallContext(tenant="beta", caller="worker")):
        other = await servicer.QueryMemories(memory_pb2.QueryMemoriesRequest(text="cats"), NO_CONTEXT)
        assert list(other.results) == []


async def test_put_rejects_bad_input(env: Book) -> None:
    servicer = MemoryServicer(env.book, AuditSink(None))
    with pytest.raises(InvalidArgument) as caught:
        await servicer.PutMemory(
            memory_pb2.PutMemoryRequest(memory=memory_pb2.Memory(name="memories/BAD", text="x")), NO_CONTEXT
        )
    assert caught.value.violations[0][0] == "memory.name"
    with pytest.raises(InvalidArgument) as caught:
        await servicer.PutMemory(memory_pb2.PutMemoryRequest(), NO_CONTEXT)
    assert caught.value.violations == [("memory", "required")]
    with pytest.raises(InvalidArgument):
        await servicer.GetMemory(memory_pb2.GetMemoryRequest(name="nope"), NO_CONTEXT)
