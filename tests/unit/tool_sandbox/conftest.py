from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agentflow_tool_sandbox.events import Chunk, Event, Result, Stream
from agentflow_tool_sandbox.executor import ProcessBackendConfig, ProcessRunner
from agentflow_tool_sandbox.spec import Limits, ProcessSpec
from agentflow_tool_sandbox.store import metadata
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SAFETY_TIMEOUT = 60.0
"""Upper bound for any single execution in these tests; a safety net, never an assertion."""


def python_tool(source: str, **env: str) -> ProcessSpec:
    """A tool running `source` with the interpreter of the service."""
    return ProcessSpec(command=("{python}", "-c", textwrap.dedent(source)), env=env)


def limits(**overrides: Any) -> Limits:
    return Limits(**{"wall_time_seconds": SAFETY_TIMEOUT, **overrides})


async def collect(events: AsyncIterable[Event]) -> tuple[list[Chunk], Result]:
    """Every chunk and the result of an execution, checking the result comes last and once."""

    async def run() -> tuple[list[Chunk], Result]:
        chunks: list[Chunk] = []
        results: list[Result] = []
        async for event in events:
            assert not results, "nothing may follow the result"
            if isinstance(event, Chunk):
                chunks.append(event)
            else:
                results.append(event)
        assert len(results) == 1
        return chunks, results[0]

    return await asyncio.wait_for(run(), SAFETY_TIMEOUT * 2)


def stdout_of(chunks: list[Chunk]) -> bytes:
    return b"".join(c.data for c in chunks if c.stream is Stream.STDOUT)


def entries(directory: Path) -> list[Path]:
    return list(directory.iterdir())


def exists(path: Path) -> bool:
    return path.exists()


def resolved(path: Path) -> Path:
    return path.resolve()


@pytest.fixture
def scratch_root(tmp_path: Path) -> Path:
    return tmp_path / "scratch"


@pytest.fixture
def runner(scratch_root: Path) -> ProcessRunner:
    return ProcessRunner(ProcessBackendConfig(scratch_root=scratch_root, python=sys.executable))


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    db = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'tool-sandbox.db'}")
    async with db.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield db
    await db.dispose()
