"""The usage ledger: one row per model call, with its tokens, cost and (for keyed calls) the response.

A call with an idempotency key is recorded once per tenant and key; a repeat finds the recorded response.
The hot path (lookup by key, insert of a row) runs on the raw driver: `ledger.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentflow_runtime.db import UtcDateTime
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["UsageRecord", "find_by_key", "metadata", "usage"]

metadata = MetaData()

usage = Table(
    "usage",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("tenant", String(128), nullable=False),
    Column("model", String(128), nullable=False),
    Column("operation", String(16), nullable=False),
    Column("run", String(256), nullable=False, default=""),
    Column("step_id", String(128), nullable=False, default=""),
    Column("idempotency_key", String(256), nullable=True),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("response", JSON, nullable=True),
    Column("create_time", UtcDateTime(), nullable=False),
    UniqueConstraint("tenant", "idempotency_key", name="uq_usage_tenant_key"),
)


@dataclass(frozen=True)
class UsageRecord:
    """One model call to record; `idempotency_key` empty for unkeyed calls."""

    tenant: str
    model: str
    operation: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    run: str = ""
    step_id: str = ""
    idempotency_key: str = ""
    response: dict[str, Any] | None = None


async def find_by_key(conn: AsyncConnection, tenant: str, key: str) -> dict[str, Any] | None:
    """The response recorded for a tenant's idempotency key, if any."""
    row = (
        await conn.execute(
            select(usage.c.response).where(usage.c.tenant == tenant, usage.c.idempotency_key == key)
        )
    ).first()
    return None if row is None else dict(row.response or {})
