"""Which mesh identities may call which RPC. Deny is the answer for anything not allowed here."""

from __future__ import annotations

from collections.abc import Mapping

from agentflow_runtime.certs import CLIENT_IDENTITY
from agentflow_runtime.settings import SERVICES

MESH_SERVICES = frozenset(SERVICES)
"""Identities of the mesh's own services."""

ANY_PEER = MESH_SERVICES | {CLIENT_IDENTITY}
"""Services plus operator clients holding the dev/admin client certificate."""

RULES: Mapping[str, frozenset[str]] = {
    # Only services append to the audit chain; nobody else writes evidence.
    "/agentflow.audit.v1.AuditIngestService/AppendAuditEvents": MESH_SERVICES - {"audit"},
    # Tools execute for a run (worker) or for an MCP client through the edge (gateway), nobody else.
    "/agentflow.tools.v1.ToolService/ExecuteTool": frozenset({"worker", "gateway"}),
    # Who may start an execution may stop it (a run's cancellation, a step timeout).
    "/agentflow.tools.v1.ToolService/CancelToolExecution": frozenset({"worker", "gateway"}),
    # The gateway's MCP endpoint relays its clients' JSON-RPC to the tool-sandbox; nobody else speaks it.
    "/agentflow.tools.v1.McpBridgeService/Exchange": frozenset({"gateway"}),
}
"""Methods with a narrower allow-list than `ANY_PEER`; every other method admits `ANY_PEER`."""


def allowed(method: str, identity: str) -> bool:
    """Whether `identity` may call the full gRPC `method` (`/pkg.Service/Method`)."""
    if not identity:
        return False
    return identity in RULES.get(method, ANY_PEER)
