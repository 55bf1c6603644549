"""Helpers shared by the integration and e2e tests: free ports, PostgreSQL databases, a running mesh."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

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
    "WAIT_SECONDS",
    "af",
    "auth",
    "catalog_mesh",
    "host_address",
    "mesh_settings",
    "postgres_available",
    "postgres_database",
    "require_postgres",
    "sandbox_writable_dir",
    "sandbox_writable_file",
    "wait_for",
]

T = TypeVar("T")

WAIT_SECONDS = 120.0
"""Seconds `wait_for` waits before the test gives up; never an assertion about speed."""


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
def catalog_mesh(
    backend: str, data_dir: Path, catalog: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[tuple[Settings, Mesh]]:
    """A mesh of its own on `catalog`, over `backend`: "sqlite" (in `data_dir`) or "postgres" (a throwaway
    database; see `require_postgres`). `extra_env` adds settings for the services only."""
    if backend == "postgres":
        require_postgres()
        with (
            postgres_database() as url,
            localmesh.running_mesh(data_dir, catalog, url, extra_env=extra_env) as running,
        ):
            yield running
    else:
        with localmesh.running_mesh(data_dir, catalog, None, extra_env=extra_env) as running:
            yield running


def wait_for(check: Callable[[], T | None], what: str) -> T:
    """Poll `check` until it returns something truthy, and return that; fail after WAIT_SECONDS."""
    end = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def auth(token: str) -> dict[str, str]:
    """The REST edge's request headers for a bearer `token`."""
    return {"Authorization": f"Bearer {token}"}


def af(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `af` CLI against `mesh` (its environment), from the repo root; never raises on failure."""
    return subprocess.run(
        [sys.executable, "-m", "agentflow_cli", *args],
        cwd=REPO,
        env=mesh.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def host_address() -> str | None:
    """A non-loopback address of this machine (no packet is sent), None when it has none."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        address = str(probe.getsockname()[0])
        if not address.startswith("127."):
            return address
    return None


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
