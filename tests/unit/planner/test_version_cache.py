"""Stored versions are cached forever (they never change); which one is latest only briefly."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentflow_planner.registry import WorkflowRegistry
from agentflow_planner.store import metadata, workflows
from agentflow_planner.version_cache import VersionCache
from agentflow_runtime.db import Database
from agentflow_runtime.errors import NotFound
from sqlalchemy import delete, insert, select

SOURCE = "id: cached\nsteps:\n  - id: a\n    kind: tool\n    tool: word-count\n"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def make(tmp_path: Path, clock: Clock, max_versions: int = 16) -> tuple[Database, WorkflowRegistry]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'planner.db'}")
    await db.create_all(metadata)
    return db, WorkflowRegistry(db, VersionCache(max_versions=max_versions, latest_ttl=1.0, clock=clock))


async def test_a_read_version_is_served_without_the_database(tmp_path: Path) -> None:
    clock = Clock()
    db, registry = await make(tmp_path, clock)
    await registry.create("acme", SOURCE)
    async with db.begin() as conn:
        await conn.execute(delete(workflows))
    # Version 1 is immutable: still served, and so is its plan.
    assert (await registry.get("acme", "cached", 1)).version == 1
    assert [s.id for s in (await registry.compile("acme", "cached", 1)).steps] == ["a"]
    await db.dispose()


async def test_latest_is_rechecked_after_its_ttl(tmp_path: Path) -> None:
    clock = Clock()
    db, registry = await make(tmp_path, clock)
    await registry.create("acme", SOURCE)
    assert (await registry.get("acme", "cached")).version == 1
    # Another replica stores version 2 behind this one's back.
    async with db.begin() as conn:
        row = (await conn.execute(select(workflows))).mappings().one()
        await conn.execute(insert(workflows).values({**row, "version": 2}))
    assert (await registry.get("acme", "cached")).version == 1  # within the TTL
    clock.now += 1.5
    assert (await registry.get("acme", "cached")).version == 2  # re-read after it
    await db.dispose()


async def test_tenants_never_share_cache_entries(tmp_path: Path) -> None:
    clock = Clock()
    db, registry = await make(tmp_path, clock)
    await registry.create("acme", SOURCE)
    await registry.get("acme", "cached")
    with pytest.raises(NotFound):  # from the store: the cache does not answer for another tenant
        await registry.get("globex", "cached")
    await db.dispose()


async def test_the_cache_is_bounded(tmp_path: Path) -> None:
    clock = Clock()
    db, registry = await make(tmp_path, clock, max_versions=2)
    for n in range(3):
        await registry.create("acme", SOURCE.replace("id: cached", f"id: w{n}"))
    async with db.begin() as conn:
        await conn.execute(delete(workflows))
    assert (await registry.get("acme", "w2", 1)).workflow_id == "w2"
    with pytest.raises(NotFound):  # evicted, and gone from the store
        await registry.get("acme", "w0", 1)
    await db.dispose()
