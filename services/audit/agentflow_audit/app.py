"""The audit service: its database, its chain and its two gRPC services."""

from __future__ import annotations

import grpc
from agentflow.audit.v1 import audit_pb2, audit_pb2_grpc
from agentflow_runtime.db import Database
from agentflow_runtime.rawdb import open_raw
from agentflow_runtime.server import Runtime
from agentflow_runtime.settings import Settings

from agentflow_audit.ledger import AuditLog
from agentflow_audit.servicer import AuditIngestServicer, AuditServicer
from agentflow_audit.store import AuditStore, metadata

SERVICE_NAMES = (
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditIngestService"].full_name,
)


class AuditService:
    """Serves AuditService and AuditIngestService over one SQL-backed hash chain."""

    name = "audit"
    service_names = SERVICE_NAMES

    def __init__(self, settings: Settings) -> None:
        self._db = Database.for_service(settings, self.name)
        self._raw = open_raw(self._db, name="audit-chain")

    async def start(self, server: grpc.aio.Server, runtime: Runtime) -> None:
        await self._db.create_all(metadata)
        store = AuditStore(self._db.engine, self._raw)
        await store.initialize()
        log = AuditLog(store)
        audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(log), server)
        audit_pb2_grpc.add_AuditIngestServiceServicer_to_server(AuditIngestServicer(log), server)

    async def stop(self) -> None:
        await self._raw.close()
        await self._db.dispose()


def build(settings: Settings) -> AuditService:
    """The audit service for `af serve audit`."""
    return AuditService(settings)
