"""Runs a compiled plan on the real worker engine (SQLite store, scripted calls): what fsm and bt plans do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from agentflow_planner.compiler import Plan as CompiledPlan
from agentflow_planner.compiler import compile_plan
from agentflow_planner.definition import parse_definition
from agentflow_runtime.db import Database
from agentflow_worker.engine import RunEngine
from agentflow_worker.model import Plan, RunRecord
from agentflow_worker.store import RunStore
from agentflow_worker.tables import metadata

from tests.unit.worker.conftest import SAFETY, FakeCalls, Notes, create_run, step_states


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RunStore]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}")
    await database.create_all(metadata)
    yield RunStore(database)
    await database.dispose()


def compiled(source: Mapping[str, Any]) -> CompiledPlan:
    return compile_plan(parse_definition(source), version=1)


async def run_plan(
    store: RunStore, calls: FakeCalls, plan: CompiledPlan, run_input: dict[str, Any] | None = None
) -> RunRecord:
    """Executes the plan to its end; returns the run as journaled."""
    worker_plan = Plan.from_json(plan.to_dict())
    run = await create_run(store, worker_plan, run_input=run_input or {})
    assert await store.claim(run.run_id, "w1", 600)
    fresh = await store.get(run.run_id)
    assert fresh is not None
    await asyncio.wait_for(RunEngine(store, calls, "w1", Notes()).execute(fresh), SAFETY)
    final = await store.get(run.run_id)
    assert final is not None
    return final


states = step_states
