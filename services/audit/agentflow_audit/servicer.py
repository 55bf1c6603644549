"""gRPC transport of the audit service: translates protobuf to the audit log and back, nothing more."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc
from agentflow.audit.v1 import audit_pb2, audit_pb2_grpc
from agentflow_runtime import context, pagination
from agentflow_runtime.protojson import dict_from_struct, struct_from_dict, timestamp, utcnow
from typing_extensions import override

from agentflow_audit.events import AuditRecord, NewAuditEvent
from agentflow_audit.ledger import AuditLog

Ctx = grpc.aio.ServicerContext[Any, Any]


def to_proto(record: AuditRecord) -> audit_pb2.AuditEvent:
    """The protobuf form of a chain entry."""
    return audit_pb2.AuditEvent(
        name=record.name,
        seq=record.seq,
        event_time=timestamp(record.event_time),
        actor=record.actor,
        tenant=record.tenant,
        principal=record.principal,
        action=record.action,
        resource=record.resource,
        outcome=record.outcome,
        details=struct_from_dict(record.details),
        prev_hash=record.prev_hash,
        hash=record.hash,
    )


def from_proto(event: audit_pb2.AuditEvent, ctx: context.CallContext) -> NewAuditEvent:
    """An event to append: the actor is the caller's certificate identity, never the request's."""
    moment = event.event_time.ToDatetime(tzinfo=UTC) if event.HasField("event_time") else utcnow()
    return NewAuditEvent(
        event_time=moment,
        actor=ctx.caller,
        tenant=event.tenant or ctx.tenant,
        principal=event.principal,
        action=event.action,
        resource=event.resource,
        outcome=event.outcome,
        details=dict_from_struct(event.details),
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """AuditService: list (tenant-scoped unless admin) and verify."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log

    @override
    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context_: Ctx
    ) -> audit_pb2.ListAuditEventsResponse:
        ctx = context.current()
        page = await self._log.list(
            tenant=ctx.tenant,
            role=ctx.role,
            resource=request.resource,
            after_seq=pagination.decode_token(request.page_token),
            page_size=pagination.clamp_page_size(request.page_size, default=100, maximum=1000),
        )
        return audit_pb2.ListAuditEventsResponse(
            audit_events=[to_proto(r) for r in page.events],
            next_page_token=pagination.encode_token(page.next_after_seq) if page.next_after_seq else "",
        )

    @override
    async def VerifyAuditLog(
        self, request: audit_pb2.VerifyAuditLogRequest, context_: Ctx
    ) -> audit_pb2.VerifyAuditLogResponse:
        result = await self._log.verify()
        return audit_pb2.VerifyAuditLogResponse(
            valid=result.valid,
            checked_count=result.checked,
            first_invalid_seq=result.first_invalid_seq,
            reason=result.reason,
            head_hash=result.head_hash,
        )


class AuditIngestServicer(audit_pb2_grpc.AuditIngestServiceServicer):
    """AuditIngestService: mesh services append batches."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log

    @override
    async def AppendAuditEvents(
        self, request: audit_pb2.AppendAuditEventsRequest, context_: Ctx
    ) -> audit_pb2.AppendAuditEventsResponse:
        ctx = context.current()
        records = await self._log.append([from_proto(e, ctx) for e in request.audit_events])
        return audit_pb2.AppendAuditEventsResponse(audit_events=[to_proto(r) for r in records])
