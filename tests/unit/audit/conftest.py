from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from agentflow_audit.events import NewAuditEvent
from agentflow_audit.store import AuditStore
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


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AuditStore]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}")
    audit_store = AuditStore(engine)
    await audit_store.initialize()
    yield audit_store
    await engine.dispose()
