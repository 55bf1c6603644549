from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agentflow_memory.domain import MemoryBook
from agentflow_memory.embedder import LocalEmbedder
from agentflow_memory.vectors import VectorIndex
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


@dataclass
class Clock:
    now: datetime = datetime(2025, 6, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Book:
    book: MemoryBook
    engine: AsyncEngine
    vectors: VectorIndex
    clock: Clock


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Book]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}")
    vectors = VectorIndex.open(path=tmp_path / "qdrant")
    clock = Clock()
    book = MemoryBook(engine, vectors, LocalEmbedder(), clock=clock)
    await book.initialize()
    yield Book(book, engine, vectors, clock)
    await vectors.close()
    await engine.dispose()
