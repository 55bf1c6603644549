"""Hot statements on the raw driver, beside a service's SQLAlchemy `Database`.

Through SQLAlchemy's async layer a short transaction costs ~1-2 CPU-ms (a greenlet switch and an aiosqlite
thread hop per cursor call, statement compilation, a pool-reset ROLLBACK per check-in). A service whose
hot path is a few fixed statements runs them here instead, on the same database and tables:

- `SqliteThread`: one sqlite3 connection on its own thread; a transaction is one function run on that
  thread (one hop). Same pragmas as `agentflow_runtime.db` (WAL, synchronous=NORMAL, busy_timeout), so it
  shares the file with the service's SQLAlchemy connections; sqlite3 keeps prepared statements per
  connection (`cached_statements`) and the connection lives as long as the service.
- `PgPool`: a small asyncpg pool on the service's schema, opened on first use; asyncpg prepares and caches
  each statement per connection.

`raw_target(db)` says which one a `Database` needs. Values must be stored as SQLAlchemy stores them
(`sqlite_value` / `pg_value`: JSON text, UTC timestamps) so the rest of the service keeps reading and
writing the same rows through SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from typing import Any, TypeVar

from sqlalchemy import JSON, Table
from sqlalchemy.engine import make_url

from agentflow_runtime.db import Database, UtcDateTime

__all__ = [
    "PgPool",
    "SqliteThread",
    "column_kinds",
    "open_raw",
    "pg_dsn",
    "pg_value",
    "sqlite_path",
    "sqlite_value",
]

T = TypeVar("T")


def sqlite_path(db: Database) -> str:
    """The file of a SQLite `Database` (a raw connection cannot share an in-memory database)."""
    path = make_url(db.url).database
    if not path or path == ":memory:":
        raise ValueError("the raw-driver path needs a SQLite file, not an in-memory database")
    return path


def pg_dsn(db: Database) -> str:
    """The libpq DSN of a PostgreSQL `Database` (its SQLAlchemy URL without the driver name)."""
    return make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)


def open_raw(db: Database, *, name: str = "rawdb") -> SqliteThread | PgPool:
    """The raw-driver path to `db`: its SQLite file on a thread of its own, or an asyncpg pool on its
    schema."""
    if db.is_sqlite:
        return SqliteThread(sqlite_path(db), name=name)
    return PgPool.for_database(db)


# -- values as SQLAlchemy stores them --------------------------------------------------------------


def column_kinds(table: Table) -> dict[str, str]:
    """Which columns need converting: "json" (JSON) and "time" (`UtcDateTime`)."""
    kinds = {}
    for column in table.columns:
        if isinstance(column.type, JSON):
            kinds[column.name] = "json"
        elif isinstance(column.type, UtcDateTime):
            kinds[column.name] = "time"
    return kinds


def sqlite_value(kind: str | None, value: Any) -> Any:
    """A value as SQLAlchemy's SQLite dialect stores it (JSON text, naive UTC text, 0/1)."""
    if kind == "json":
        return json.dumps(value)
    if kind == "time" and value is not None:
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    return value


def pg_value(kind: str | None, value: Any) -> Any:
    """A value as SQLAlchemy's asyncpg dialect binds it (JSON text, aware UTC datetime)."""
    if kind == "json":
        return json.dumps(value)
    if kind == "time" and value is not None:
        return value.astimezone(UTC)
    return value


# -- SQLite -------------------------------------------------------------------------------------------


class SqliteThread:
    """One sqlite3 connection on its own thread; `run(fn)` calls `fn(conn)` there.

    `transaction(fn)` wraps `fn` in BEGIN IMMEDIATE … COMMIT (ROLLBACK on any error): the write lock is
    taken up front (waiting up to the busy timeout), so a transaction never fails on a stale snapshot.
    """

    def __init__(self, path: str, *, name: str = "rawdb") -> None:
        self.path = path
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, cached_statements=256)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None:
            raise RuntimeError("the SQLite connection is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._conn()))

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def tx(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                if conn.in_transaction:  # `fn` may have ended it (e.g. ROLLBACK on a lost lease)
                    conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT leaves the transaction open: end it, or the next BEGIN would fail.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return await self.run(tx)

    async def close(self) -> None:
        pool = self._pool
        if pool is None:
            return

        def shut(conn: sqlite3.Connection) -> None:
            conn.close()
            self._local.conn = None

        await self.run(shut)
        self._pool = None
        pool.shutdown(wait=True)


# -- PostgreSQL ---------------------------------------------------------------------------------------


class PgPool:
    """A small asyncpg pool on a schema (search_path), opened on first use; `await pool()` gives it."""

    def __init__(self, dsn: str, schema: str | None, *, max_size: int = 10) -> None:
        self.dsn = dsn
        self.schema = schema
        self.max_size = max_size
        self._pool: Any = None
        self._opening = asyncio.Lock()

    @classmethod
    def for_database(cls, db: Database, *, max_size: int = 10) -> PgPool:
        return cls(pg_dsn(db), db.schema, max_size=max_size)

    async def __call__(self) -> Any:
        """The asyncpg pool (`fetchrow`, `fetch`, `execute`, `acquire()`...)."""
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    import asyncpg

                    settings = {"search_path": self.schema} if self.schema else {}
                    self._pool = await asyncpg.create_pool(
                        self.dsn, min_size=1, max_size=self.max_size, server_settings=settings
                    )
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
