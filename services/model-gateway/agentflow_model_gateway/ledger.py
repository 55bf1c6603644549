"""The usage ledger's hot statements on the raw driver (`agentflow_runtime.rawdb`).

Every model call writes one `usage` row, and a keyed `Complete` first looks its key up. Through
SQLAlchemy async these two cost ~2 CPU-ms per call (a savepoint around the INSERT to catch the duplicate,
statement compilation, greenlet and aiosqlite hops); here each is one driver call: one function on the
SQLite connection's thread, or one prepared statement on a pooled asyncpg connection.

Same table and values as `store.py` (`usage`; JSON text, UTC timestamps), so reads through SQLAlchemy see
the same rows. A row is one INSERT: it commits whole or not at all. A duplicate (tenant, idempotency key)
is `INSERT … ON CONFLICT DO NOTHING` matching nothing, not an error: the caller then reads the recorded
row, in a statement of its own, so on PostgreSQL it sees the row the conflicting transaction committed.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Protocol

from agentflow_runtime.db import Database
from agentflow_runtime.protojson import utcnow
from agentflow_runtime.rawdb import PgPool, SqliteThread, column_kinds, pg_value, sqlite_path, sqlite_value

from .store import UsageRecord, usage

__all__ = ["Ledger", "open_ledger"]

_KINDS = column_kinds(usage)
_COLUMNS = (
    "tenant",
    "model",
    "operation",
    "run",
    "step_id",
    "idempotency_key",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "response",
    "create_time",
)
_NAMES = ", ".join(f'"{c}"' for c in _COLUMNS)


def _insert(mark: str) -> str:
    marks = ", ".join(mark.format(i + 1) for i in range(len(_COLUMNS)))
    return (
        f"INSERT INTO usage ({_NAMES}) VALUES ({marks}) "
        "ON CONFLICT (tenant, idempotency_key) DO NOTHING RETURNING id"
    )


_SQLITE_INSERT = _insert("?")
_PG_INSERT = _insert("${}")
_SQLITE_FIND = "SELECT response FROM usage WHERE tenant = ? AND idempotency_key = ?"
_PG_FIND = "SELECT response FROM usage WHERE tenant = $1 AND idempotency_key = $2"


def _values(record: UsageRecord) -> dict[str, Any]:
    return {
        "tenant": record.tenant,
        "model": record.model,
        "operation": record.operation,
        "run": record.run,
        "step_id": record.step_id,
        "idempotency_key": record.idempotency_key or None,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cost_usd": record.cost_usd,
        "response": record.response,
        "create_time": utcnow(),
    }


def _response(value: Any) -> dict[str, Any]:
    data = json.loads(value) if isinstance(value, str) else value
    return dict(data or {})


class Ledger(Protocol):
    async def find(self, tenant: str, key: str) -> dict[str, Any] | None:
        """The response recorded for a tenant's idempotency key, if any."""

    async def record(self, record: UsageRecord) -> bool:
        """Writes a ledger row; False when the tenant already recorded the same idempotency key."""

    async def close(self) -> None: ...


def open_ledger(db: Database) -> Ledger:
    if db.is_sqlite:
        return SqliteLedger(sqlite_path(db))
    return PostgresLedger(PgPool.for_database(db))


class SqliteLedger:
    """The ledger on one sqlite3 connection on its own thread (its INSERT is one autocommit statement)."""

    def __init__(self, path: str) -> None:
        self._db = SqliteThread(path, name="usage-ledger")

    async def find(self, tenant: str, key: str) -> dict[str, Any] | None:
        row = await self._db.run(lambda conn: conn.execute(_SQLITE_FIND, (tenant, key)).fetchone())
        return None if row is None else _response(row[0])

    async def record(self, record: UsageRecord) -> bool:
        values = _values(record)
        args = [sqlite_value(_KINDS.get(c), values[c]) for c in _COLUMNS]

        def insert(conn: sqlite3.Connection) -> bool:
            return conn.execute(_SQLITE_INSERT, args).fetchone() is not None

        return await self._db.transaction(insert)

    async def close(self) -> None:
        await self._db.close()


class PostgresLedger:
    """The ledger on a small asyncpg pool on the model-gateway's schema; statements prepared once."""

    def __init__(self, pool: PgPool) -> None:
        self._pool = pool

    async def find(self, tenant: str, key: str) -> dict[str, Any] | None:
        row = await (await self._pool()).fetchrow(_PG_FIND, tenant, key)
        return None if row is None else _response(row[0])

    async def record(self, record: UsageRecord) -> bool:
        values = _values(record)
        args = [pg_value(_KINDS.get(c), values[c]) for c in _COLUMNS]
        return await (await self._pool()).fetchrow(_PG_INSERT, *args) is not None

    async def close(self) -> None:
        await self._pool.close()
