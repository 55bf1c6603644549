"""The usage ledger on the raw driver: rows as SQLAlchemy reads them, one row per key, replicas racing.

On SQLite and on PostgreSQL (a throwaway database; required under CI).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agentflow_model_gateway.gateway import CallInfo, ModelGateway
from agentflow_model_gateway.ledger import open_ledger
from agentflow_model_gateway.providers.base import ChatMessage
from agentflow_model_gateway.routing import Router
from agentflow_model_gateway.store import UsageRecord, find_by_key, metadata, usage
from agentflow_runtime.db import Database
from agentflow_runtime.errors import FailedPrecondition
from sqlalchemy import select

from tests.support import postgres_database, require_postgres
from tests.unit.model_gateway.test_gateway import MESSAGES, PRICED, GatedProvider


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'model-gateway.db'}"
        return
    require_postgres()
    with postgres_database() as pg_url:
        yield pg_url


@pytest.fixture
async def db(url: str) -> AsyncIterator[Database]:
    database = Database(url, schema="model_gateway")
    await database.create_all(metadata)
    yield database
    await database.dispose()


RECORD = UsageRecord(
    tenant="acme",
    model="priced",
    operation="complete",
    input_tokens=12,
    output_tokens=3,
    cost_usd=0.000054,
    run="runs/r1",
    step_id="draft",
    idempotency_key="runs/r1/draft/1",
    response={"text": "héllo", "finish_reason": "stop", "tool_calls": [{"id": "c1", "arguments": {"n": 1}}]},
)


async def test_a_raw_row_reads_alike_through_sqlalchemy(db: Database) -> None:
    ledger = open_ledger(db)
    try:
        before = datetime.now(UTC)
        assert await ledger.record(RECORD)
        assert await ledger.find("acme", RECORD.idempotency_key) == RECORD.response
        assert await ledger.find("globex", RECORD.idempotency_key) is None
        async with db.connect() as conn:
            assert await find_by_key(conn, "acme", RECORD.idempotency_key) == RECORD.response
            row = (await conn.execute(select(usage))).one()
        assert (row.tenant, row.model, row.operation, row.run, row.step_id, row.idempotency_key) == (
            "acme",
            "priced",
            "complete",
            "runs/r1",
            "draft",
            "runs/r1/draft/1",
        )
        assert (row.input_tokens, row.output_tokens, row.cost_usd) == (12, 3, pytest.approx(0.000054))
        assert row.response == RECORD.response
        assert row.create_time.tzinfo is not None
        assert before - timedelta(seconds=1) <= row.create_time <= datetime.now(UTC) + timedelta(seconds=1)
    finally:
        await ledger.close()


async def test_a_key_is_recorded_once_and_unkeyed_rows_every_time(db: Database) -> None:
    ledger = open_ledger(db)
    try:
        assert await ledger.record(RECORD)
        second = UsageRecord(**{**RECORD.__dict__, "input_tokens": 99, "response": {"text": "other"}})
        assert not await ledger.record(second)
        assert await ledger.find("acme", RECORD.idempotency_key) == RECORD.response
        unkeyed = UsageRecord("acme", "priced", "embed", 3, 0, 0.0)
        assert await ledger.record(unkeyed)
        assert await ledger.record(unkeyed)
        async with db.connect() as conn:
            rows = (await conn.execute(select(usage.c.idempotency_key, usage.c.input_tokens))).all()
        assert sorted(rows, key=str) == sorted([("runs/r1/draft/1", 12), (None, 3), (None, 3)], key=str)
    finally:
        await ledger.close()


async def test_two_replicas_racing_on_a_key_record_one_row_and_answer_alike(db: Database) -> None:
    """Replica B looked the key up before A recorded it; its insert then matches nothing and it answers
    with A's recorded result."""
    slow = GatedProvider()
    fast = GatedProvider()
    fast.gate.set()
    a = ModelGateway(Router([PRICED], factory=lambda _model: fast), db)
    b = ModelGateway(Router([PRICED], factory=lambda _model: slow), db)
    call = CallInfo("acme", run="runs/r3", step_id="a", idempotency_key="runs/r3/a/1")
    try:
        late = asyncio.create_task(b.complete("priced", MESSAGES, call))
        await asyncio.wait_for(slow.entered.wait(), 10)
        first = await a.complete("priced", MESSAGES, call)
        slow.gate.set()
        answer = await asyncio.wait_for(late, 10)
        assert not first.replayed and answer.replayed
        assert (answer.text, answer.usage, answer.cost_usd) == (first.text, first.usage, first.cost_usd)
        async with db.connect() as conn:
            keys = (await conn.execute(select(usage.c.idempotency_key))).scalars().all()
        assert keys == ["runs/r3/a/1"]
        # A different request under the recorded key is still refused on either replica.
        with pytest.raises(FailedPrecondition, match="already used"):
            await b.complete("priced", [ChatMessage("user", "something else")], call)
    finally:
        await a.aclose()
        await b.aclose()
