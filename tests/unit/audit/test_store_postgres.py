from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from agentflow_audit.store import AuditStore
from agentflow_runtime.rawdb import PgPool
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .conftest import make_event

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
_SCHEMAS: dict[int, str] = {}
"""The throwaway schema of each `pg_engine`, for the raw-driver pools on it."""

pytestmark = pytest.mark.postgres


async def _reachable() -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", 5432), timeout=2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


@pytest.fixture
async def pg_engine() -> AsyncIterator[AsyncEngine]:
    if not await _reachable() and os.environ.get("CI") != "true":
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    schema = f"audit_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_async_engine(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
    _SCHEMAS[id(engine)] = schema
    try:
        yield engine
    finally:
        _SCHEMAS.pop(id(engine), None)
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "sqlalchemy"])
async def test_postgres_chain_survives_concurrent_stores(pg_engine: AsyncEngine, raw: bool) -> None:
    # Two stores on one database stand for two audit replicas: only the row lock orders them.
    schema = _SCHEMAS[id(pg_engine)]
    pools = [PgPool(_DSN, schema, max_size=3) for _ in range(2)] if raw else [None, None]
    first, second = AuditStore(pg_engine, pools[0]), AuditStore(pg_engine, pools[1])
    await asyncio.gather(first.initialize(), second.initialize())

    async def appender(store: AuditStore, worker: int) -> None:
        for batch in range(5):
            await store.append([make_event(worker * 10 + batch, details={"f": 1.5, "i": 2.0})] * 2)

    await asyncio.gather(*(appender(first if w % 2 else second, w) for w in range(6)))
    result = await first.verify(page_size=7)
    assert result.valid, result.reason
    assert result.checked == 60
    events, _ = await first.list_events(tenant="acme", resource=None, after_seq=0, limit=5)
    assert events[0].details == {"f": 1.5, "i": 2}

    async with pg_engine.begin() as conn:
        await conn.execute(text("UPDATE audit_events SET principal = 'eve' WHERE seq = 17"))
    tampered = await second.verify()
    assert not tampered.valid
    assert tampered.first_invalid_seq == 17
    for pool in pools:
        if pool is not None:
            await pool.close()
