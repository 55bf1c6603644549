"""The raw-driver helpers: a SQLite transaction is all or nothing on its own thread; the asyncpg pool works
in the service's schema; values are stored as SQLAlchemy stores them."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from agentflow_runtime.db import Database, UtcDateTime
from agentflow_runtime.rawdb import PgPool, SqliteThread, column_kinds, pg_value, sqlite_path, sqlite_value
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, select

from tests.support import postgres_database, require_postgres

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(32), nullable=False, unique=True),
    Column("data", JSON),
    Column("at", UtcDateTime()),
)
KINDS = column_kinds(items)
AT = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)


def test_column_kinds() -> None:
    assert KINDS == {"data": "json", "at": "time"}


async def test_sqlite_transactions_commit_whole_or_not_at_all(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    await db.create_all(metadata)
    raw = SqliteThread(sqlite_path(db), name="test-raw")
    sql = "INSERT INTO items (name, data, at) VALUES (?, ?, ?)"
    threads: set[str] = set()

    def insert(*names: str) -> Callable[[sqlite3.Connection], None]:
        def tx(conn: sqlite3.Connection) -> None:
            threads.add(threading.current_thread().name)
            assert conn.in_transaction
            for name in names:
                conn.execute(sql, (name, sqlite_value("json", {"n": name}), sqlite_value("time", AT)))

        return tx

    try:
        await raw.transaction(insert("a", "b"))
        with pytest.raises(sqlite3.IntegrityError):
            await raw.transaction(insert("c", "a"))
        names = await raw.run(lambda conn: [r[0] for r in conn.execute("SELECT name FROM items ORDER BY id")])
        assert names == ["a", "b"]  # "c" rolled back with the duplicate "a"
        assert len(threads) == 1 and threads.pop().startswith("test-raw")
        async with db.connect() as conn:
            rows = (
                await conn.execute(select(items.c.name, items.c.data, items.c.at).order_by(items.c.id))
            ).all()
        assert [tuple(r) for r in rows] == [("a", {"n": "a"}, AT), ("b", {"n": "b"}, AT)]
    finally:
        await raw.close()
        await db.dispose()
    with pytest.raises(RuntimeError):
        await raw.run(lambda conn: None)


def test_sqlite_path_refuses_memory() -> None:
    with pytest.raises(ValueError):
        sqlite_path(Database("sqlite+aiosqlite:///:memory:"))


@pytest.fixture
def pg_url() -> Iterator[str]:
    require_postgres()
    with postgres_database() as url:
        yield url


async def test_pg_pool_runs_in_the_service_schema(pg_url: str) -> None:
    db = Database(pg_url, schema="svc_raw")
    await db.create_all(metadata)
    pool = PgPool.for_database(db, max_size=2)
    try:
        raw = await pool()
        assert raw is await pool()
        await raw.execute(
            "INSERT INTO items (name, data, at) VALUES ($1, $2, $3)",
            "a",
            pg_value("json", {"n": 1}),
            pg_value("time", AT),
        )
        assert await raw.fetchval("SELECT current_schema()") == "svc_raw"
        async with db.connect() as conn:
            row = (await conn.execute(select(items.c.name, items.c.data, items.c.at))).one()
        assert tuple(row) == ("a", {"n": 1}, AT)
    finally:
        await pool.close()
        await db.dispose()


async def test_sqlite_a_failed_commit_is_rolled_back_and_the_connection_reusable(tmp_path: Path) -> None:
    """A deferred foreign key fails at COMMIT, which leaves SQLite's transaction open: it is rolled back."""
    raw = SqliteThread(str(tmp_path / "fk.db"))
    try:
        await raw.run(lambda conn: conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        await raw.run(
            lambda conn: conn.execute(
                "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER "
                "REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
        with pytest.raises(sqlite3.IntegrityError):
            await raw.transaction(lambda conn: conn.execute("INSERT INTO child VALUES (1, 99)"))
        assert not await raw.run(lambda conn: conn.in_transaction)
        await raw.transaction(lambda conn: conn.execute("INSERT INTO parent VALUES (7)"))
        await raw.transaction(lambda conn: conn.execute("INSERT INTO child VALUES (2, 7)"))
        rows = await raw.run(lambda conn: conn.execute("SELECT id, parent FROM child").fetchall())
        assert rows == [(2, 7)]
    finally:
        await raw.close()
