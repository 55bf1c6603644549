from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentflow_memory.domain import MemoryBook
from agentflow_memory.embedder import LocalEmbedder
from agentflow_memory.records import MemoryDraft
from agentflow_memory.vectors import VectorIndex
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

pytestmark = pytest.mark.postgres


async def _reachable() -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", 5432), timeout=2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


@pytest.fixture
async def pg_book(tmp_path: Path) -> AsyncIterator[MemoryBook]:
    if not await _reachable() and os.environ.get("CI") != "true":
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    schema = f"memory_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_async_engine(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
    vectors = VectorIndex.open(path=tmp_path / "qdrant")
    book = MemoryBook(engine, vectors, LocalEmbedder())
    try:
        await book.initialize()
        yield book
    finally:
        await vectors.close()
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def test_memory_book_on_postgres(pg_book: MemoryBook) -> None:
    drafts = [
        MemoryDraft("cats", "cats and kittens", subject="alice", metadata={"x": 1.5}),
        MemoryDraft("taxes", "income taxes due", subject="alice", ttl_seconds=3600),
    ]
    first = await asyncio.gather(*(pg_book.put("acme", d) for d in drafts * 3))
    assert {r.memory_id for r in first} == {"cats", "taxes"}
    assert (await pg_book.get("acme", "cats")).metadata == {"x": 1.5}
    results = await pg_book.query("acme", "kittens and cats")
    assert [r.memory.memory_id for r in results] == ["cats", "taxes"]
    assert await pg_book.erase("acme", "alice") == 2
    assert await pg_book.query("acme", "cats") == []
