"""The audit chain in SQL: `audit_events` (one row per entry) and `chain_head` (the last seq and hash).

Appends are serialized so the chain never forks: an in-process lock orders appenders of one process and, on
PostgreSQL, `SELECT ... FOR UPDATE` on the single `chain_head` row orders appenders across processes. The
head row is updated in the same transaction as the entries it covers.

Given a raw-driver target (`agentflow_runtime.rawdb`: the service's SQLite file on its own thread, or an
asyncpg pool on its schema), `append` runs the same statements there, as one call on the SQLite thread or one
asyncpg transaction, instead of through SQLAlchemy async (statement compilation, a greenlet and driver hop per
statement): every audited call of the mesh ends here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from agentflow_runtime import hashchain
from agentflow_runtime.db import UtcDateTime
from agentflow_runtime.rawdb import PgPool, SqliteThread, column_kinds, pg_value, sqlite_value
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from agentflow_audit.events import AuditRecord, NewAuditEvent

metadata = MetaData()

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_time", UtcDateTime(), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("tenant", String(256), nullable=False),
    Column("principal", String(512), nullable=False),
    Column("action", String(256), nullable=False),
    Column("resource", String(1024), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("details", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_events_tenant_seq", "tenant", "seq"),
    Index("ix_audit_events_resource_seq", "resource", "seq"),
)

chain_head = Table(
    "chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

_HEAD_ID = 1

_KINDS = column_kinds(audit_events)
_COLUMNS = tuple(c.name for c in audit_events.columns)
_NAMES = ", ".join(f'"{c}"' for c in _COLUMNS)
_SQLITE_INSERT = f"INSERT INTO audit_events ({_NAMES}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_PG_INSERT = (
    f"INSERT INTO audit_events ({_NAMES}) VALUES ({', '.join(f'${i + 1}' for i in range(len(_COLUMNS)))})"
)
_SQLITE_HEAD = f"SELECT seq, hash FROM chain_head WHERE id = {_HEAD_ID}"
_PG_HEAD = f"SELECT seq, hash FROM chain_head WHERE id = {_HEAD_ID} FOR UPDATE"
_SQLITE_SET_HEAD = f"UPDATE chain_head SET seq = ?, hash = ? WHERE id = {_HEAD_ID}"
_PG_SET_HEAD = f"UPDATE chain_head SET seq = $1, hash = $2 WHERE id = {_HEAD_ID}"


def _row(record: AuditRecord, value: Callable[[str | None, Any], Any]) -> list[Any]:
    mapping = record.as_mapping()
    return [value(_KINDS.get(c), mapping[c]) for c in _COLUMNS]


def _chained(seq: int, prev_hash: str, events: Sequence[NewAuditEvent]) -> list[AuditRecord]:
    """`events` as the chain entries after (`seq`, `prev_hash`)."""
    records: list[AuditRecord] = []
    for event in events:
        seq += 1
        fields: dict[str, Any] = {
            "seq": seq,
            "event_time": event.event_time,
            "actor": event.actor,
            "tenant": event.tenant,
            "principal": event.principal,
            "action": event.action,
            "resource": event.resource,
            "outcome": event.outcome,
            "details": hashchain.normalize(event.details),
        }
        digest = hashchain.chain_hash(prev_hash, fields)
        records.append(AuditRecord(**fields, prev_hash=prev_hash, hash=digest))
        prev_hash = digest
    return records


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        event_time=row.event_time,
        actor=row.actor,
        tenant=row.tenant,
        principal=row.principal,
        action=row.action,
        resource=row.resource,
        outcome=row.outcome,
        details=dict(row.details or {}),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class AuditStore:
    """Appends to, reads and verifies the chain held in one database."""

    def __init__(self, engine: AsyncEngine, raw: SqliteThread | PgPool | None = None) -> None:
        self._engine = engine
        self._raw = raw
        self._lock = asyncio.Lock()

    async def initialize(self) -> None:
        """Create the tables if missing and the head row of an empty chain (safe for racing replicas)."""
        for attempt in range(5):
            try:
                async with self._engine.begin() as conn:
                    await conn.run_sync(metadata.create_all)
                break
            except DBAPIError:
                # Another replica created the same table concurrently: retry and find it.
                if attempt == 4:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))
        try:
            async with self._engine.begin() as conn:
                found = await conn.scalar(select(chain_head.c.id).where(chain_head.c.id == _HEAD_ID))
                if found is None:
                    await conn.execute(
                        insert(chain_head).values(id=_HEAD_ID, seq=0, hash=hashchain.GENESIS_HASH)
                    )
        except IntegrityError:
            pass  # another process created the head row first

    async def append(self, events: Sequence[NewAuditEvent]) -> list[AuditRecord]:
        """Append `events` in order, atomically; returns them with their seq and hashes."""
        if not events:
            return []
        if isinstance(self._raw, SqliteThread):
            return await self._append_sqlite(self._raw, events)
        if isinstance(self._raw, PgPool):
            async with self._lock:
                return await self._append_pg(self._raw, events)
        async with self._lock, self._engine.begin() as conn:
            head = (
                await conn.execute(
                    select(chain_head.c.seq, chain_head.c.hash)
                    .where(chain_head.c.id == _HEAD_ID)
                    .with_for_update()
                )
            ).one()
            records = _chained(int(head.seq), str(head.hash), events)
            await conn.execute(insert(audit_events), [{**r.as_mapping()} for r in records])
            last = records[-1]
            await conn.execute(
                update(chain_head).where(chain_head.c.id == _HEAD_ID).values(seq=last.seq, hash=last.hash)
            )
        return records

    @staticmethod
    async def _append_sqlite(raw: SqliteThread, events: Sequence[NewAuditEvent]) -> list[AuditRecord]:
        """One call on the SQLite thread: BEGIN IMMEDIATE (the write lock orders every appender, of this
        process or another), read the head, insert the entries, move the head, COMMIT."""

        def tx(conn: sqlite3.Connection) -> list[AuditRecord]:
            seq, prev_hash = conn.execute(_SQLITE_HEAD).fetchone()
            records = _chained(int(seq), str(prev_hash), events)
            conn.executemany(
                _SQLITE_INSERT,
                [_row(r, sqlite_value) for r in records],
            )
            conn.execute(_SQLITE_SET_HEAD, (records[-1].seq, records[-1].hash))
            return records

        return await raw.transaction(tx)

    @staticmethod
    async def _append_pg(raw: PgPool, events: Sequence[NewAuditEvent]) -> list[AuditRecord]:
        """One asyncpg transaction: the head row locked FOR UPDATE orders appenders across replicas."""
        pool = await raw()
        async with pool.acquire() as conn, conn.transaction():
            head = await conn.fetchrow(_PG_HEAD)
            records = _chained(int(head[0]), str(head[1]), events)
            await conn.executemany(_PG_INSERT, [_row(r, pg_value) for r in records])
            await conn.execute(_PG_SET_HEAD, records[-1].seq, records[-1].hash)
        return records

    async def list_events(
        self, *, tenant: str | None, resource: str | None, after_seq: int, limit: int
    ) -> tuple[list[AuditRecord], bool]:
        """Entries after `after_seq` in seq order (filtered when given) and whether more follow."""
        query = select(audit_events).where(audit_events.c.seq > after_seq)
        if tenant is not None:
            query = query.where(audit_events.c.tenant == tenant)
        if resource:
            query = query.where(audit_events.c.resource == resource)
        query = query.order_by(audit_events.c.seq).limit(limit + 1)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows[:limit]], len(rows) > limit

    async def scan(self, page_size: int = 1000) -> AsyncIterator[AuditRecord]:
        """Every entry in seq order, read a page at a time."""
        after = 0
        while True:
            query = (
                select(audit_events)
                .where(audit_events.c.seq > after)
                .order_by(audit_events.c.seq)
                .limit(page_size)
            )
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                yield _record(row)
            if len(rows) < page_size:
                return
            after = rows[-1].seq

    async def head(self) -> tuple[int, str]:
        """The seq and hash of the last entry (0 and "" for an empty chain)."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.id == _HEAD_ID)
                )
            ).one_or_none()
        return (0, hashchain.GENESIS_HASH) if row is None else (int(row.seq), str(row.hash))

    async def verify(self, page_size: int = 1000) -> hashchain.VerifyResult:
        """Recompute the whole chain and check that the head row agrees with its last entry."""
        head_seq, head_hash = await self.head()
        verifier = hashchain.ChainVerifier()
        async for record in self.scan(page_size):
            if not verifier.feed(record.as_mapping()):
                return verifier.result()
        last_seq = verifier.next_seq - 1
        if last_seq < head_seq:
            verifier.fail_at(
                last_seq + 1, f"entries {last_seq + 1}..{head_seq} are missing: the log was truncated"
            )
        elif last_seq > head_seq or verifier.head_hash != head_hash:
            verifier.fail_at(last_seq, f"the chain head (seq {head_seq}) does not match entry {last_seq}")
        return verifier.result()
