"""The model-gateway service: model catalog, usage ledger and ModelService."""

from __future__ import annotations

import grpc
from agentflow.models.v1 import models_pb2, models_pb2_grpc
from agentflow_runtime.db import Database
from agentflow_runtime.server import Runtime
from agentflow_runtime.settings import Settings

from .config import load_models
from .gateway import ModelGateway
from .routing import Router, check_scripts
from .servicer import ModelServicer
from .store import metadata

SERVICE_NAMES = (models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,)


class ModelGatewayService:
    """Serves ModelService with the models of `catalog/models/*.yaml` (or the built-in local model)."""

    name = "model-gateway"
    service_names = SERVICE_NAMES

    def __init__(self, settings: Settings) -> None:
        self._db = Database.for_service(settings, self.name)
        models = load_models(settings.catalog_dir / "models")
        check_scripts(models)
        self._router = Router(models)
        self._gateway: ModelGateway | None = None

    async def start(self, server: grpc.aio.Server, runtime: Runtime) -> None:
        await self._db.create_all(metadata)
        self._gateway = ModelGateway(self._router, self._db)
        gateway = self._gateway
        models_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(gateway, runtime.audit), server)

    async def stop(self) -> None:
        await self._router.aclose()
        if self._gateway is not None:
            await self._gateway.aclose()
        await self._db.dispose()


def build(settings: Settings) -> ModelGatewayService:
    """The model-gateway for `af serve model-gateway`."""
    return ModelGatewayService(settings)
