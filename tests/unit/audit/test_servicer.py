from __future__ import annotations

from typing import Any

from agentflow.audit.v1 import audit_pb2
from agentflow_audit.ledger import AuditLog
from agentflow_audit.servicer import AuditIngestServicer, AuditServicer
from agentflow_audit.store import AuditStore
from agentflow_runtime import context, hashchain
from agentflow_runtime.protojson import struct_from_dict
from google.protobuf import json_format

NO_CONTEXT: Any = None


def event(n: int, tenant: str = "") -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        actor="mallory",
        tenant=tenant,
        principal="alice",
        action="run.start",
        resource=f"runs/r{n}",
        outcome="ok",
        details=struct_from_dict({"n": n, "token": "s3cret"}),
    )


async def test_append_list_verify_over_the_servicers(store: AuditStore) -> None:
    log = AuditLog(store)
    ingest, reader = AuditIngestServicer(log), AuditServicer(log)
    request = audit_pb2.AppendAuditEventsRequest(audit_events=[event(1), event(2, "beta"), event(3)])
    with context.bound(context.CallContext(tenant="acme", caller="worker")):
        appended = await ingest.AppendAuditEvents(request, NO_CONTEXT)
    assert [e.seq for e in appended.audit_events] == [1, 2, 3]
    assert {e.actor for e in appended.audit_events} == {"worker"}
    assert [e.tenant for e in appended.audit_events] == ["acme", "beta", "acme"]
    assert appended.audit_events[0].name == "auditEvents/1"
    assert appended.audit_events[0].details["token"] == "[REDACTED]"
    assert appended.audit_events[0].HasField("event_time")

    with context.bound(context.CallContext(tenant="acme", role="developer", caller="gateway")):
        first = await reader.ListAuditEvents(audit_pb2.ListAuditEventsRequest(page_size=1), NO_CONTEXT)
        assert [e.seq for e in first.audit_events] == [1]
        assert first.next_page_token
        second = await reader.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=1, page_token=first.next_page_token), NO_CONTEXT
        )
        assert [e.seq for e in second.audit_events] == [3]
        assert second.next_page_token == ""
        verdict = await reader.VerifyAuditLog(audit_pb2.VerifyAuditLogRequest(), NO_CONTEXT)
    assert verdict.valid and verdict.checked_count == 3
    assert verdict.head_hash == appended.audit_events[-1].hash

    with context.bound(context.CallContext(tenant="acme", role="admin", caller="gateway")):
        everything = await reader.ListAuditEvents(audit_pb2.ListAuditEventsRequest(), NO_CONTEXT)
    assert len(everything.audit_events) == 3


async def test_protobuf_json_export_verifies_offline(store: AuditStore) -> None:
    log = AuditLog(store)
    request = audit_pb2.AppendAuditEventsRequest(audit_events=[event(n) for n in range(1, 5)])
    with context.bound(context.CallContext(tenant="acme", role="admin", caller="worker")):
        await AuditIngestServicer(log).AppendAuditEvents(request, NO_CONTEXT)
        listed = await AuditServicer(log).ListAuditEvents(audit_pb2.ListAuditEventsRequest(), NO_CONTEXT)
    exported = [json_format.MessageToDict(e) for e in listed.audit_events]
    assert hashchain.verify(exported).valid
    exported[2]["details"]["n"] = 7
    assert hashchain.verify(exported).first_invalid_seq == 3
