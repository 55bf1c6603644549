"""Fixtures shared by the model gateway's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentflow_model_gateway.store import metadata
from agentflow_runtime.db import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """The gateway's tables on a fresh SQLite file."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'model-gateway.db'}")
    await database.create_all(metadata)
    yield database
    await database.dispose()
