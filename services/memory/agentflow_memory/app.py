"""The memory service: SQL records, Qdrant vectors (local folder, or `AF_QDRANT_URL`), expiry sweeps."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from agentflow.memory.v1 import memory_pb2, memory_pb2_grpc
from agentflow_runtime.db import Database
from agentflow_runtime.server import Runtime
from agentflow_runtime.settings import Settings

from agentflow_memory.domain import MemoryBook
from agentflow_memory.embedder import LocalEmbedder
from agentflow_memory.servicer import MemoryServicer
from agentflow_memory.store import metadata
from agentflow_memory.vectors import VectorIndex

log = logging.getLogger("agentflow.memory")

SWEEP_INTERVAL_SECONDS = 60.0


class MemoryService:
    """Serves MemoryService; owns the Qdrant folder in local mode (one process per folder)."""

    name = "memory"
    service_names = (memory_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name,)

    def __init__(self, settings: Settings, *, qdrant_url: str | None = None) -> None:
        self._settings = settings
        self._qdrant_url = qdrant_url
        self._db = Database.for_service(settings, self.name)
        self._vectors: VectorIndex | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, server: grpc.aio.Server, runtime: Runtime) -> None:
        await self._db.create_all(metadata)
        self._vectors = VectorIndex.open(path=self._settings.data_dir / "qdrant", url=self._qdrant_url)
        book = MemoryBook(self._db.engine, self._vectors, LocalEmbedder())
        await book.initialize()
        memory_pb2_grpc.add_MemoryServiceServicer_to_server(MemoryServicer(book, runtime.audit), server)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(book))

    async def _sweep(self, book: MemoryBook) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            try:
                swept = await book.sweep_expired()
            except Exception:
                log.exception("expiry sweep failed")
                continue
            if swept:
                log.info("expired memories swept", extra={"fields": {"count": swept}})

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._vectors is not None:
            await self._vectors.close()
        await self._db.dispose()


def build(settings: Settings) -> MemoryService:
    """The memory service for `af serve memory`; a Qdrant server is used when `qdrant_url` is set."""
    return MemoryService(settings, qdrant_url=settings.qdrant_url)
