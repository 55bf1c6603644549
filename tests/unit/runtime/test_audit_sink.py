"""The audit sink delivers in order, keeps events while audit is down, and is never wedged by a bad event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from agentflow.audit.v1 import audit_pb2, audit_pb2_grpc
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.errors import InvalidArgument


class Ingest(audit_pb2_grpc.AuditIngestServiceServicer):
    def __init__(self) -> None:
        self.appended: list[str] = []

    async def AppendAuditEvents(
        self, request: audit_pb2.AppendAuditEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.AppendAuditEventsResponse:
        if any(e.action == "poison" for e in request.audit_events):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "poison")
        self.appended += [e.action for e in request.audit_events]
        return audit_pb2.AppendAuditEventsResponse(audit_events=list(request.audit_events))


@pytest.fixture
async def ingest() -> AsyncIterator[tuple[Ingest, str]]:
    servicer = Ingest()
    server = grpc.aio.server()
    audit_pb2_grpc.add_AuditIngestServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


async def test_a_refused_event_is_dropped_and_the_rest_delivered(ingest: tuple[Ingest, str]) -> None:
    servicer, target = ingest
    async with grpc.aio.insecure_channel(target) as channel:
        sink = AuditSink(channel)
        for action in ("first", "poison", "last"):
            sink.record(action, "runs/r1")
        assert await sink.flush() is True
        assert servicer.appended == ["first", "last"]
        assert sink.dropped == 1
        sink.record("after", "runs/r1")
        assert await sink.flush() is True
        assert servicer.appended == ["first", "last", "after"]


async def test_events_are_kept_while_audit_is_unreachable(ingest: tuple[Ingest, str]) -> None:
    servicer, target = ingest
    async with grpc.aio.insecure_channel("127.0.0.1:1") as dead:
        sink = AuditSink(dead)
        sink.record("kept", "runs/r2")
        assert await sink.flush() is False
    async with grpc.aio.insecure_channel(target) as channel:
        sink._stub = audit_pb2_grpc.AuditIngestServiceStub(channel)
        assert await sink.flush() is True
    assert servicer.appended == ["kept"]


def test_unknown_outcome_is_a_programming_error() -> None:
    sink = AuditSink(None)
    with pytest.raises(ValueError, match="outcome"):
        sink.record("x", "y", outcome="meh")
    sink.record("x", "y", outcome="cancelled")  # known outcomes are accepted (and dropped: no channel)
    assert not isinstance(sink, InvalidArgument)
