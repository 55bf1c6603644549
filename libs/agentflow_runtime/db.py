"""SQL storage for a service: SQLite file by default, PostgreSQL (asyncpg) with a schema per service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, MetaData, TypeDecorator, event, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from agentflow_runtime.settings import Settings


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, on the way in and out, on every backend.

    PostgreSQL keeps the zone (timestamptz); SQLite stores text without one and hands back naive values.
    Every service stores UTC, so naive values read back are UTC by construction.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Database:
    """An async engine plus the conventions every service shares."""

    def __init__(self, url: str, *, schema: str | None = None, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.schema = None if self.is_sqlite else schema
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
            if self.schema:
                kwargs["connect_args"] = {"server_settings": {"search_path": self.schema}}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)

    @classmethod
    def for_service(cls, settings: Settings, service: str) -> Database:
        """The database of `service`: its own SQLite file, or its own schema in PostgreSQL."""
        if settings.database_url:
            return cls(settings.database_url, schema=service.replace("-", "_"))
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path = (settings.data_dir / f"{service}.db").resolve()
        return cls(f"sqlite+aiosqlite:///{path}")

    async def create_all(self, metadata: MetaData) -> None:
        """Create the service's schema and tables if missing (safe when replicas start together)."""
        for attempt in range(5):
            try:
                async with self.engine.begin() as conn:
                    if self.schema:
                        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                    await conn.run_sync(metadata.create_all)
                return
            except (IntegrityError, DBAPIError):
                # Two replicas racing to create the same object: the loser retries and finds it.
                if attempt == 4:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside a transaction, committed on success, rolled back on error."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads only: on SQLite its transaction is deferred, so readers run concurrently."""
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                await conn.execution_options(**{_READ_ONLY: True})
            yield conn

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


_READ_ONLY = "agentflow_read_only"


def _sqlite_begin(conn: Any) -> None:
    """Every SQLite transaction takes the write lock when it begins (BEGIN IMMEDIATE), reads excepted.

    A deferred transaction that reads and then writes while another connection holds the write lock gets
    SQLITE_BUSY at once, without the busy timeout (SQLite cannot let it wait: its snapshot is stale), which
    surfaced as "database is locked" under concurrent runs. IMMEDIATE waits its turn (busy_timeout) instead.
    """
    read_only = conn.get_execution_options().get(_READ_ONLY, False)
    conn.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver must not open transactions by itself: `_sqlite_begin` does, with the right mode.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
