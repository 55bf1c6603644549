"""Helpers shared by the integration and e2e tests: free ports, PostgreSQL databases, a running mesh."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from agentflow_cli import localmesh
from agentflow_cli.localmesh import isolated_settings
from agentflow_cli.pgtemp import postgres_available, postgres_database
from agentflow_cli.supervisor import Mesh
from agentflow_runtime.settings import Settings

REPO = Path(__file__).resolve().parent.parent
MESH_ENV = {
    "AF_MCP_API_ALLOWED_HOSTS": json.dumps(["127.0.0.1"]),
    "AF_SANDBOX_API_PATH_ROOTS": json.dumps([str(REPO / "tests" / "mcp_servers")]),
}
"""What the test mesh's operator allows API registrations: MCP servers on 127.0.0.1 (the tests' demo
servers), and the demo stdio server's script directory."""

__all__ = [
    "MESH_ENV",
    "REPO",
    "mesh_settings",
    "postgres_available",
    "postgres_database",
    "require_postgres",
    "running_mesh",
    "sandbox_writable_dir",
    "sandbox_writable_file",
]


def require_postgres() -> None:
    """Skip without PostgreSQL, except under CI where its absence is a failure."""
    if postgres_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("PostgreSQL on 127.0.0.1:5432 is required under CI")
    pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")


def mesh_settings(data_dir: Path, database_url: str | None = None) -> tuple[Settings, dict[str, str]]:
    """Settings for a test mesh on the repo's catalog, and the environment its processes need."""
    return isolated_settings(data_dir, REPO / "catalog", database_url)


@contextmanager
def running_mesh(data_dir: Path, database_url: str | None = None) -> Iterator[tuple[Settings, Mesh]]:
    """Start all seven services as real processes with mTLS; stop them afterwards."""
    with localmesh.running_mesh(data_dir, REPO / "catalog", database_url, extra_env=MESH_ENV) as running:
        yield running


def sandbox_writable_dir(path: Path) -> Path:
    """A host directory a sandboxed tool may write into once its profile lists it in `writable_paths`.

    Sandboxed tools run under a per-call unprivileged uid, so the directory (and the files the test puts in
    it) must be writable by anyone; the test reads what the tool wrote to check side effects from outside.
    """
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def sandbox_writable_file(directory: Path, name: str) -> Path:
    """An empty file in a `sandbox_writable_dir` that any uid may append to."""
    file = sandbox_writable_dir(directory) / name
    file.touch()
    file.chmod(0o666)
    return file
