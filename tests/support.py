"""Helpers shared by the integration and e2e tests: free ports, PostgreSQL databases, a running mesh."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from agentflow_cli.pgtemp import postgres_available, postgres_database
from agentflow_cli.ports import free_mesh_ports
from agentflow_cli.supervisor import Mesh
from agentflow_runtime.settings import Settings

REPO = Path(__file__).resolve().parent.parent

__all__ = [
    "REPO",
    "mesh_settings",
    "postgres_available",
    "postgres_database",
    "require_postgres",
    "running_mesh",
]


def require_postgres() -> None:
    """Skip without PostgreSQL, except under CI where its absence is a failure."""
    if postgres_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("PostgreSQL on 127.0.0.1:5432 is required under CI")
    pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")


def mesh_settings(data_dir: Path, database_url: str | None = None) -> tuple[Settings, dict[str, str]]:
    """Settings for a test mesh, and the environment that gives the same settings to its processes."""
    base, http = free_mesh_ports()
    env = {
        "AF_BASE_PORT": str(base),
        "AF_HTTP_PORT": str(http),
        "AF_DATA_DIR": str(data_dir),
        "AF_CATALOG_DIR": str(REPO / "catalog"),
        "AF_LOG_LEVEL": "INFO",
        "AF_DRAIN_SECONDS": "2",
    }
    if database_url:
        env["AF_DATABASE_URL"] = database_url
    for key, value in env.items():
        os.environ[key] = value
    try:
        settings = Settings()
    finally:
        for key in env:
            os.environ.pop(key, None)
    return settings, env


@contextmanager
def running_mesh(data_dir: Path, database_url: str | None = None) -> Iterator[tuple[Settings, Mesh]]:
    """Start all seven services as real processes with mTLS; stop them afterwards."""
    settings, env = mesh_settings(data_dir, database_url)
    mesh = Mesh(settings, env=env)
    asyncio.run(mesh.up(timeout=120))
    try:
        yield settings, mesh
    finally:
        mesh.down()
