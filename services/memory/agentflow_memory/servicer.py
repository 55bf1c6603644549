"""gRPC transport of the memory service: protobuf <-> memory book, tenant from the call context."""

from __future__ import annotations

from typing import Any

import grpc
from agentflow.memory.v1 import memory_pb2, memory_pb2_grpc
from agentflow_runtime import context
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.errors import InvalidArgument
from agentflow_runtime.protojson import dict_from_struct, struct_from_dict, timestamp
from typing_extensions import override

from agentflow_memory.domain import MemoryBook
from agentflow_memory.names import memory_id_from_name
from agentflow_memory.records import MemoryDraft, MemoryRecord

Ctx = grpc.aio.ServicerContext[Any, Any]


def to_proto(record: MemoryRecord) -> memory_pb2.Memory:
    """The protobuf form of a stored memory."""
    memory = memory_pb2.Memory(
        name=record.name,
        subject=record.subject,
        namespace=record.namespace,
        text=record.text,
        labels=record.labels,
        create_time=timestamp(record.create_time),
        update_time=timestamp(record.update_time),
        metadata=struct_from_dict(record.metadata),
    )
    if record.expire_time is not None:
        memory.expire_time.CopyFrom(timestamp(record.expire_time))
    return memory


def draft_from_proto(memory: memory_pb2.Memory) -> MemoryDraft:
    """The memory to put, from the request's resource."""
    return MemoryDraft(
        memory_id=memory_id_from_name(memory.name, "memory.name"),
        text=memory.text,
        subject=memory.subject,
        namespace=memory.namespace,
        labels=dict(memory.labels),
        metadata=dict_from_struct(memory.metadata),
        ttl_seconds=memory.ttl_seconds,
    )


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    """MemoryService over one memory book; writes and erasures are audited."""

    def __init__(self, book: MemoryBook, audit: AuditSink) -> None:
        self._book = book
        self._audit = audit

    @override
    async def PutMemory(self, request: memory_pb2.PutMemoryRequest, context_: Ctx) -> memory_pb2.Memory:
        if not request.HasField("memory"):
            raise InvalidArgument("memory is required", violations=[("memory", "required")])
        draft = draft_from_proto(request.memory)
        record = await self._book.put(context.current().tenant, draft)
        self._audit.record("memory.put", record.name, details={"subject": record.subject})
        return to_proto(record)

    @override
    async def GetMemory(self, request: memory_pb2.GetMemoryRequest, context_: Ctx) -> memory_pb2.Memory:
        memory_id = memory_id_from_name(request.name)
        return to_proto(await self._book.get(context.current().tenant, memory_id))

    @override
    async def QueryMemories(
        self, request: memory_pb2.QueryMemoriesRequest, context_: Ctx
    ) -> memory_pb2.QueryMemoriesResponse:
        results = await self._book.query(
            context.current().tenant,
            request.text,
            top_k=request.top_k,
            subject=request.subject,
            namespace=request.namespace,
            labels=dict(request.labels),
        )
        return memory_pb2.QueryMemoriesResponse(
            results=[memory_pb2.ScoredMemory(memory=to_proto(r.memory), score=r.score) for r in results]
        )

    @override
    async def EraseMemories(
        self, request: memory_pb2.EraseMemoriesRequest, context_: Ctx
    ) -> memory_pb2.EraseMemoriesResponse:
        erased = await self._book.erase(context.current().tenant, request.subject)
        self._audit.record("memory.erase", f"subjects/{request.subject}", details={"erased_count": erased})
        return memory_pb2.EraseMemoriesResponse(erased_count=erased)
