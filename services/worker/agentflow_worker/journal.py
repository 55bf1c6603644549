"""The run journal's hot statements on the raw driver: one transaction per transition, one driver hop.

Every step transition goes through here (`RunStore.transition`, `create`, `events_after`, `run_state`).
Through SQLAlchemy's async layer a three-statement transaction costs ~2.2 CPU-ms (a greenlet switch and
an aiosqlite thread hop per cursor call, statement compilation, pool reset on check-in); here it is one
function run on the connection's own thread (SQLite) or a few prepared statements on one pooled asyncpg
connection (PostgreSQL): ~0.2 CPU-ms. The SQL is the same as before, on the same tables (`tables.py`),
with the values stored exactly as SQLAlchemy stores them (JSON text, UTC timestamps), so the rest of the
worker keeps reading and writing these rows through SQLAlchemy.

The lease is checked inside the write: the runs UPDATE matches only `lease_owner = me AND lease_expires >
now`; when it matches nothing the transaction writes nothing else and the caller gets `None` (lease lost).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from agentflow_runtime.db import Database
from agentflow_runtime.rawdb import PgPool, SqliteThread, column_kinds, pg_value, sqlite_path, sqlite_value

from agentflow_worker.model import Event, EventType, RunState
from agentflow_worker.tables import events, runs, steps

Increment = tuple[str, int]
"""(column, amount): `column = column + amount` in a runs UPDATE."""


@dataclass(frozen=True)
class RunWrite:
    """One transition: the run's changes (under its lease), its steps' changes and the new events."""

    run_id: str
    owner: str
    now: datetime
    run_values: dict[str, Any]
    increments: tuple[Increment, ...]
    step_values: dict[str, dict[str, Any]]
    events: Sequence[Event]


class Journal(Protocol):
    async def write(self, change: RunWrite) -> bool | None:
        """Apply `change` in one transaction: its `cancel_requested` flag, or None if the lease is lost."""

    async def insert(self, run_row: dict[str, Any], step_rows: list[dict[str, Any]], first: Event) -> None:
        """Insert a run, its steps and its first event in one transaction (IntegrityError on a duplicate)."""

    async def events_after(self, run_id: str, after_seq: int, limit: int) -> list[Event]: ...

    async def run_state(self, run_id: str) -> tuple[RunState, int] | None: ...

    async def tenant_of(self, run_id: str) -> str | None: ...

    async def close(self) -> None: ...


class DuplicateRun(Exception):
    """The run (or its request id) exists already."""


def open_journal(db: Database) -> Journal:
    if db.is_sqlite:
        return SqliteJournal(sqlite_path(db))
    return PostgresJournal(PgPool.for_database(db))


# -- values as SQLAlchemy stores them (`agentflow_runtime.rawdb`) -------------------------------------

_KINDS = {t.name: column_kinds(t) for t in (runs, steps, events)}
_EVENT_COLUMNS = ("run_id", "seq", "type", "step_id", "run_state", "data", "create_time")
_sqlite_value = sqlite_value
_pg_value = pg_value


def _event(row: Sequence[Any]) -> Event:
    run_id, seq, kind, step_id, run_state, data, create_time = row
    if isinstance(create_time, str):
        create_time = datetime.fromisoformat(create_time)
    if create_time.tzinfo is None:
        create_time = create_time.replace(tzinfo=UTC)
    return Event(
        run_id=run_id,
        seq=int(seq),
        type=EventType(kind),
        step_id=step_id or "",
        run_state=RunState(run_state),
        data=(json.loads(data) if isinstance(data, str) else data) or {},
        create_time=create_time.astimezone(UTC),
    )


class _Sql:
    """Statement text per column set, cached; `mark(n)` renders the n-th (1-based) placeholder."""

    def __init__(self, mark: Callable[[int], str]) -> None:
        self.mark = mark
        self._cache: dict[Any, str] = {}

    def run_update(self, columns: tuple[str, ...], increments: tuple[str, ...]) -> str:
        key = ("run", columns, increments)
        if key not in self._cache:
            sets = [f'"{c}" = {self.mark(i + 1)}' for i, c in enumerate(columns)]
            n = len(columns)
            sets += [f'"{c}" = "{c}" + {self.mark(n + i + 1)}' for i, c in enumerate(increments)]
            n += len(increments)
            self._cache[key] = (
                f"UPDATE runs SET {', '.join(sets)} WHERE run_id = {self.mark(n + 1)} "
                f"AND lease_owner = {self.mark(n + 2)} AND lease_expires > {self.mark(n + 3)} "
                "RETURNING cancel_requested"
            )
        return self._cache[key]

    def step_update(self, columns: tuple[str, ...]) -> str:
        key = ("step", columns)
        if key not in self._cache:
            sets = ", ".join(f'"{c}" = {self.mark(i + 1)}' for i, c in enumerate(columns))
            n = len(columns)
            self._cache[key] = (
                f"UPDATE steps SET {sets} WHERE run_id = {self.mark(n + 1)} AND step_id = {self.mark(n + 2)}"
            )
        return self._cache[key]

    def insert(self, table: str, columns: tuple[str, ...]) -> str:
        key = ("insert", table, columns)
        if key not in self._cache:
            marks = ", ".join(self.mark(i + 1) for i in range(len(columns)))
            names = ", ".join(f'"{c}"' for c in columns)
            self._cache[key] = f"INSERT INTO {table} ({names}) VALUES ({marks})"
        return self._cache[key]


_EVENTS_AFTER = (
    "SELECT "
    + ", ".join(f'"{c}"' for c in _EVENT_COLUMNS)
    + " FROM run_events WHERE run_id = {0} AND seq > {1} ORDER BY seq LIMIT {2}"
)
_RUN_STATE = "SELECT state, last_seq FROM runs WHERE run_id = {0}"
_TENANT = "SELECT tenant FROM runs WHERE run_id = {0}"


def _planned(change: RunWrite, value: Callable[[str | None, Any], Any]) -> list[tuple[str, list[Any]]]:
    """The statements of a transition after the runs UPDATE, grouped for executemany."""
    groups: dict[tuple[str, ...], list[list[Any]]] = {}
    kinds = _KINDS["steps"]
    for step_id, values in change.step_values.items():
        columns = tuple(values)
        groups.setdefault(columns, []).append(
            [*(value(kinds.get(c), values[c]) for c in columns), change.run_id, step_id]
        )
    out: list[tuple[str, list[Any]]] = [(f"step:{','.join(c)}", rows) for c, rows in groups.items()]
    if change.events:
        kinds = _KINDS["run_events"]
        rows = [[value(kinds.get(c), r[c]) for c in _EVENT_COLUMNS] for r in (e.row() for e in change.events)]
        out.append(("events", rows))
    return out


def _run_args(change: RunWrite, value: Callable[[str | None, Any], Any]) -> tuple[tuple[str, ...], list[Any]]:
    kinds = _KINDS["runs"]
    columns = tuple(change.run_values)
    args = [value(kinds.get(c), change.run_values[c]) for c in columns]
    args += [amount for _, amount in change.increments]
    args += [change.run_id, change.owner, value("time", change.now)]
    return columns, args


# -- SQLite -------------------------------------------------------------------------------------------


class SqliteJournal:
    """The journal on one sqlite3 connection on its own thread (`rawdb.SqliteThread`): each transaction
    is one call on that thread, BEGIN IMMEDIATE taking the write lock up front."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = SqliteThread(path, name="run-journal")
        self._sql = _Sql(lambda _n: "?")

    async def write(self, change: RunWrite) -> bool | None:
        columns, args = _run_args(change, _sqlite_value)
        run_sql = self._sql.run_update(columns, tuple(c for c, _ in change.increments))
        rest = [(self._statement(name), rows) for name, rows in _planned(change, _sqlite_value)]

        def tx(conn: sqlite3.Connection) -> bool | None:
            row = conn.execute(run_sql, args).fetchone()
            if row is None:
                conn.execute("ROLLBACK")
                return None
            for sql, rows in rest:
                conn.executemany(sql, rows)
            return bool(row[0])

        return await self._db.transaction(tx)

    def _statement(self, name: str) -> str:
        if name == "events":
            return self._sql.insert("run_events", _EVENT_COLUMNS)
        return self._sql.step_update(tuple(name.removeprefix("step:").split(",")))

    async def insert(self, run_row: dict[str, Any], step_rows: list[dict[str, Any]], first: Event) -> None:
        run_columns = tuple(run_row)
        run_sql = self._sql.insert("runs", run_columns)
        run_args = [_sqlite_value(_KINDS["runs"].get(c), run_row[c]) for c in run_columns]
        step_columns = tuple(step_rows[0]) if step_rows else ()
        step_sql = self._sql.insert("steps", step_columns)
        step_args = [[_sqlite_value(_KINDS["steps"].get(c), r[c]) for c in step_columns] for r in step_rows]
        event_sql = self._sql.insert("run_events", _EVENT_COLUMNS)
        event_args = [_sqlite_value(_KINDS["run_events"].get(c), v) for c, v in first.row().items()]

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(run_sql, run_args)
            if step_args:
                conn.executemany(step_sql, step_args)
            conn.execute(event_sql, event_args)

        try:
            await self._db.transaction(tx)
        except sqlite3.IntegrityError as exc:
            raise DuplicateRun(str(exc)) from exc

    async def events_after(self, run_id: str, after_seq: int, limit: int) -> list[Event]:
        sql = _EVENTS_AFTER.format("?", "?", "?")
        rows = await self._db.run(lambda conn: conn.execute(sql, (run_id, after_seq, limit)).fetchall())
        return [_event(r) for r in rows]

    async def run_state(self, run_id: str) -> tuple[RunState, int] | None:
        sql = _RUN_STATE.format("?")
        row = await self._db.run(lambda conn: conn.execute(sql, (run_id,)).fetchone())
        return None if row is None else (RunState(row[0]), int(row[1]))

    async def tenant_of(self, run_id: str) -> str | None:
        sql = _TENANT.format("?")
        row = await self._db.run(lambda conn: conn.execute(sql, (run_id,)).fetchone())
        return None if row is None else str(row[0])

    async def close(self) -> None:
        await self._db.close()


# -- PostgreSQL ---------------------------------------------------------------------------------------

_PG_EVENT_TYPES = {
    "run_id": "varchar",
    "seq": "bigint",
    "type": "varchar",
    "step_id": "varchar",
    "run_state": "varchar",
    "data": "json",
    "create_time": "timestamptz",
}


def _pg_transition(change: RunWrite) -> tuple[str, list[Any]]:
    """A transition as one statement. Its text depends only on the shape of the change (which columns,
    how many steps and events), so asyncpg's per-connection statement cache prepares each shape once."""
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    kinds = _KINDS["runs"]
    sets = [f'"{c}" = {arg(_pg_value(kinds.get(c), v))}' for c, v in change.run_values.items()]
    sets += [f'"{c}" = "{c}" + {arg(amount)}' for c, amount in change.increments]
    parts = [
        f"r AS (UPDATE runs SET {', '.join(sets)} WHERE run_id = {arg(change.run_id)} "
        f"AND lease_owner = {arg(change.owner)} AND lease_expires > {arg(_pg_value('time', change.now))} "
        "RETURNING cancel_requested)"
    ]
    kinds = _KINDS["steps"]
    for i, (step_id, values) in enumerate(change.step_values.items()):
        step_sets = ", ".join(f'"{c}" = {arg(_pg_value(kinds.get(c), v))}' for c, v in values.items())
        parts.append(
            f"s{i} AS (UPDATE steps SET {step_sets} WHERE run_id = {arg(change.run_id)} "
            f"AND step_id = {arg(step_id)} AND EXISTS (SELECT 1 FROM r))"
        )
    if change.events:
        kinds = _KINDS["run_events"]
        rows = []
        for event in change.events:
            row = event.row()
            cells = ", ".join(
                f"{arg(_pg_value(kinds.get(c), row[c]))}::{_PG_EVENT_TYPES[c]}" for c in _EVENT_COLUMNS
            )
            rows.append(f"SELECT {cells} WHERE EXISTS (SELECT 1 FROM r)")
        names = ", ".join(f'"{c}"' for c in _EVENT_COLUMNS)
        parts.append(f"e AS (INSERT INTO run_events ({names}) {' UNION ALL '.join(rows)})")
    return "WITH " + ", ".join(parts) + " SELECT cancel_requested FROM r", args


class PostgresJournal:
    """The journal on a small asyncpg pool on the worker's schema (`rawdb.PgPool`); asyncpg prepares and
    caches each statement."""

    def __init__(self, pool: PgPool) -> None:
        self._pool = pool
        self._sql = _Sql(lambda n: f"${n}")

    async def _acquire(self) -> Any:
        return await self._pool()

    async def write(self, change: RunWrite) -> bool | None:
        """One statement, one round trip: the runs UPDATE under the lease, and (only if it matched) the
        steps' UPDATEs and the events' INSERT as data-modifying CTEs of the same statement (atomic)."""
        sql, args = _pg_transition(change)
        pool = await self._acquire()
        row = await pool.fetchrow(sql, *args)
        return None if row is None else bool(row[0])

    async def insert(self, run_row: dict[str, Any], step_rows: list[dict[str, Any]], first: Event) -> None:
        import asyncpg

        run_columns = tuple(run_row)
        step_columns = tuple(step_rows[0]) if step_rows else ()
        pool = await self._acquire()
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    self._sql.insert("runs", run_columns),
                    *(_pg_value(_KINDS["runs"].get(c), run_row[c]) for c in run_columns),
                )
                if step_rows:
                    await conn.executemany(
                        self._sql.insert("steps", step_columns),
                        [[_pg_value(_KINDS["steps"].get(c), r[c]) for c in step_columns] for r in step_rows],
                    )
                await conn.execute(
                    self._sql.insert("run_events", _EVENT_COLUMNS),
                    *(_pg_value(_KINDS["run_events"].get(c), v) for c, v in first.row().items()),
                )
        except asyncpg.UniqueViolationError as exc:
            raise DuplicateRun(str(exc)) from exc

    async def events_after(self, run_id: str, after_seq: int, limit: int) -> list[Event]:
        pool = await self._acquire()
        rows = await pool.fetch(_EVENTS_AFTER.format("$1", "$2", "$3"), run_id, after_seq, limit)
        return [_event(tuple(r)) for r in rows]

    async def run_state(self, run_id: str) -> tuple[RunState, int] | None:
        pool = await self._acquire()
        row = await pool.fetchrow(_RUN_STATE.format("$1"), run_id)
        return None if row is None else (RunState(row[0]), int(row[1]))

    async def tenant_of(self, run_id: str) -> str | None:
        pool = await self._acquire()
        row = await pool.fetchrow(_TENANT.format("$1"), run_id)
        return None if row is None else str(row[0])

    async def close(self) -> None:
        await self._pool.close()
