"""The mesh's protobuf services, read from the generated modules' descriptors."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from google.protobuf import descriptor, descriptor_pool

CONTRACT_MODULES = (
    "agentflow.common.v1.common_pb2",
    "agentflow.workflows.v1.workflows_pb2",
    "agentflow.runs.v1.runs_pb2",
    "agentflow.approvals.v1.approvals_pb2",
    "agentflow.tools.v1.tools_pb2",
    "agentflow.tools.v1.mcp_pb2",
    "agentflow.models.v1.models_pb2",
    "agentflow.memory.v1.memory_pb2",
    "agentflow.audit.v1.audit_pb2",
)

SERVICE_OWNERS: dict[str, str] = {
    "agentflow.workflows.v1.WorkflowService": "planner",
    "agentflow.runs.v1.RunService": "worker",
    "agentflow.approvals.v1.ApprovalService": "worker",
    "agentflow.tools.v1.ToolService": "tool-sandbox",
    "agentflow.tools.v1.McpServerService": "tool-sandbox",
    "agentflow.tools.v1.McpBridgeService": "tool-sandbox",
    "agentflow.models.v1.ModelService": "model-gateway",
    "agentflow.memory.v1.MemoryService": "memory",
    "agentflow.audit.v1.AuditService": "audit",
    "agentflow.audit.v1.AuditIngestService": "audit",
}
"""Which mesh service serves each protobuf service."""

INTERNAL_SERVICES = frozenset(
    {"agentflow.audit.v1.AuditIngestService", "agentflow.tools.v1.McpBridgeService"}
)
"""Services that are never exposed at the edge."""


def load_contracts() -> descriptor_pool.DescriptorPool:
    """Import every generated contract module so its descriptors are in the default pool."""
    for module in CONTRACT_MODULES:
        importlib.import_module(module)
    return descriptor_pool.Default()


def service(full_name: str) -> descriptor.ServiceDescriptor:
    """The descriptor of a mesh service by full name."""
    return load_contracts().FindServiceByName(full_name)


def methods_of(service_names: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """(full service name, method name) for the given services (all mesh services by default)."""
    for name in service_names or sorted(SERVICE_OWNERS):
        for method in service(name).methods:
            yield name, method.name


def public_services() -> list[str]:
    """Services the edge exposes."""
    return sorted(s for s in SERVICE_OWNERS if s not in INTERNAL_SERVICES)
