"""Memory records in SQL; every function works inside the caller's connection (and its transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agentflow_runtime.db import UtcDateTime
from sqlalchemy import (
    JSON,
    Column,
    Index,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from agentflow_memory.records import MemoryRecord

metadata = MetaData()

memories = Table(
    "memories",
    metadata,
    Column("tenant", String(256), primary_key=True),
    Column("memory_id", String(128), primary_key=True),
    Column("subject", String(512), nullable=False),
    Column("namespace", String(512), nullable=False),
    Column("text", Text, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    Column("expire_time", UtcDateTime(), nullable=True),
    Index("ix_memories_tenant_subject", "tenant", "subject"),
    Index("ix_memories_expire_time", "expire_time"),
)


def _record(row: Any) -> MemoryRecord:
    values = row._mapping
    create_time, update_time = values["create_time"], values["update_time"]
    assert create_time is not None and update_time is not None
    return MemoryRecord(
        tenant=values["tenant"],
        memory_id=values["memory_id"],
        subject=values["subject"],
        namespace=values["namespace"],
        text=values["text"],
        labels=dict(values["labels"] or {}),
        metadata=dict(values["metadata"] or {}),
        content_hash=values["content_hash"],
        create_time=create_time,
        update_time=update_time,
        expire_time=values["expire_time"],
    )


def _values(record: MemoryRecord) -> dict[str, Any]:
    return {
        "subject": record.subject,
        "namespace": record.namespace,
        "text": record.text,
        "labels": record.labels,
        "metadata": record.metadata,
        "content_hash": record.content_hash,
        "create_time": record.create_time,
        "update_time": record.update_time,
        "expire_time": record.expire_time,
    }


def _key(tenant: str, memory_id: str) -> Any:
    return and_(memories.c.tenant == tenant, memories.c.memory_id == memory_id)


async def get(
    conn: AsyncConnection, tenant: str, memory_id: str, *, for_update: bool = False
) -> MemoryRecord | None:
    """The stored memory (expired or not), or None."""
    query = select(memories).where(_key(tenant, memory_id))
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).one_or_none()
    return None if row is None else _record(row)


async def insert_record(conn: AsyncConnection, record: MemoryRecord) -> None:
    """Store a new memory."""
    await conn.execute(
        insert(memories).values(tenant=record.tenant, memory_id=record.memory_id, **_values(record))
    )


async def replace_record(conn: AsyncConnection, record: MemoryRecord) -> None:
    """Overwrite an existing memory."""
    await conn.execute(
        update(memories).where(_key(record.tenant, record.memory_id)).values(**_values(record))
    )


async def get_many(conn: AsyncConnection, tenant: str, memory_ids: Sequence[str]) -> dict[str, MemoryRecord]:
    """The stored memories among `memory_ids`, by id."""
    if not memory_ids:
        return {}
    query = select(memories).where(memories.c.tenant == tenant, memories.c.memory_id.in_(list(memory_ids)))
    return {r.memory_id: r for r in map(_record, (await conn.execute(query)).all())}


async def delete_subject(conn: AsyncConnection, tenant: str, subject: str) -> int:
    """Delete every memory of `subject`; returns how many."""
    result = await conn.execute(
        delete(memories).where(memories.c.tenant == tenant, memories.c.subject == subject)
    )
    return int(result.rowcount)


async def expired_keys(conn: AsyncConnection, now: datetime, limit: int) -> list[tuple[str, str]]:
    """Up to `limit` (tenant, memory_id) pairs whose time to live ran out by `now`."""
    query = (
        select(memories.c.tenant, memories.c.memory_id)
        .where(memories.c.expire_time.is_not(None), memories.c.expire_time <= now)
        .limit(limit)
    )
    return [(r.tenant, r.memory_id) for r in (await conn.execute(query)).all()]


async def delete_keys(conn: AsyncConnection, tenant: str, memory_ids: Sequence[str]) -> int:
    """Delete the given memories of one tenant; returns how many."""
    if not memory_ids:
        return 0
    result = await conn.execute(
        delete(memories).where(memories.c.tenant == tenant, memories.c.memory_id.in_(list(memory_ids)))
    )
    return int(result.rowcount)


async def count(conn: AsyncConnection, tenant: str) -> int:
    """How many memories (expired or not) a tenant has stored."""
    return int(await conn.scalar(select(func.count()).where(memories.c.tenant == tenant)) or 0)
