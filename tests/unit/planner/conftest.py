"""Fixtures shared by the planner's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentflow_planner.registry import WorkflowRegistry
from agentflow_planner.store import metadata
from agentflow_runtime.db import Database


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[WorkflowRegistry]:
    """A workflow registry on a fresh SQLite file."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'planner.db'}")
    await db.create_all(metadata)
    yield WorkflowRegistry(db)
    await db.dispose()
