"""The planner service: its database, the catalog seed and WorkflowService."""

from __future__ import annotations

import logging

import grpc
from agentflow.workflows.v1 import workflows_pb2, workflows_pb2_grpc
from agentflow_runtime.context import DEFAULT_TENANT
from agentflow_runtime.db import Database
from agentflow_runtime.model_catalog import load_models
from agentflow_runtime.server import Runtime
from agentflow_runtime.settings import Settings

from .agent_catalog import AgentCatalog
from .registry import WorkflowRegistry
from .servicer import WorkflowServicer
from .store import metadata

log = logging.getLogger("agentflow.planner")

SERVICE_NAMES = (workflows_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name,)


class PlannerService:
    """Serves WorkflowService; seeds `catalog/workflows/*.yaml` into the default tenant at start."""

    name = "planner"
    service_names = SERVICE_NAMES

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._db = Database.for_service(settings, self.name)

    async def start(self, server: grpc.aio.Server, runtime: Runtime) -> None:
        await self._db.create_all(metadata)
        # Plans are priced from the same model catalog the model-gateway serves.
        models = {m.alias: m for m in load_models(self._settings.catalog_dir / "models")}
        agents = AgentCatalog.load(self._settings.catalog_dir, models)
        for name, problems in agents.problems.items():
            if problems:
                described = "; ".join(f"{p.field}: {p.description}" for p in problems)
                log.warning("catalog agent %s cannot be used: %s", name, described)
        registry = WorkflowRegistry(self._db, agents=agents)
        created = await registry.seed(DEFAULT_TENANT, self._settings.catalog_dir / "workflows")
        if created:
            log.info("seeded catalog workflows", extra={"fields": {"workflows": created}})
        workflows_pb2_grpc.add_WorkflowServiceServicer_to_server(
            WorkflowServicer(registry, runtime.audit, models), server
        )

    async def stop(self) -> None:
        await self._db.dispose()


def build(settings: Settings) -> PlannerService:
    """The planner for `af serve planner`."""
    return PlannerService(settings)
