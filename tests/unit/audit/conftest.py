from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from agentflow_audit.events import NewAuditEvent
from agentflow_audit.store import AuditStore
from agentflow_runtime.rawdb import SqliteThread
from sqlalchemy.ext.asyncio import create_async_engine


def make_event(n: int = 0, **overrides: Any) -> NewAuditEvent:
    fields: dict[str, Any] = {
        "event_time": datetime(2025, 1, 2, 3, 4, 5, n, tzinfo=UTC),
        "actor": "worker",
        "tenant": "acme",
        "principal": "alice",
        "action": "tool.execute",
        "resource": f"runs/r{n}",
        "outcome": "ok",
        "details": {"n": n, "ratio": 0.5},
    }
    fields.update(overrides)
    return NewAuditEvent(**fields)


@pytest.fixture(params=["raw", "sqlalchemy"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AuditStore]:
    """The store as the service runs it (appends on the raw driver) and on SQLAlchemy alone."""
    path = tmp_path / "audit.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    raw = SqliteThread(str(path)) if request.param == "raw" else None
    audit_store = AuditStore(engine, raw)
    await audit_store.initialize()
    yield audit_store
    if raw is not None:
        await raw.close()
    await engine.dispose()
