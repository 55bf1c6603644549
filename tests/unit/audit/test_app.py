from __future__ import annotations

from pathlib import Path

import grpc
from agentflow.audit.v1 import audit_pb2, audit_pb2_grpc
from agentflow_audit.app import build
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.clients import Channels
from agentflow_runtime.server import Runtime
from agentflow_runtime.settings import load_settings


async def test_app_serves_audit(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, database_url=None, metrics_enabled=False)
    service = build(settings)
    assert set(service.service_names) == {
        "agentflow.audit.v1.AuditService",
        "agentflow.audit.v1.AuditIngestService",
    }
    server = grpc.aio.server()
    await service.start(server, Runtime(settings, Channels(settings, "audit"), AuditSink(None)))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            verdict = await stub.VerifyAuditLog(audit_pb2.VerifyAuditLogRequest())
            assert verdict.valid and verdict.checked_count == 0
            listed = await stub.ListAuditEvents(audit_pb2.ListAuditEventsRequest())
            assert list(listed.audit_events) == []
    finally:
        await server.stop(None)
        await service.stop()
