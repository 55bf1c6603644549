"""A whole mesh on free ports in its own data directory, beside anything else running on the machine.

Used by the tests and the benches. The returned environment gives each service process the same settings the
caller gets: both take the overrides first and everything else from the same process environment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from agentflow_runtime.settings import Settings

from agentflow_cli.ports import free_mesh_ports
from agentflow_cli.supervisor import Mesh


def isolated_settings(
    data_dir: Path, catalog_dir: Path, database_url: str | None = None
) -> tuple[Settings, dict[str, str]]:
    """Settings for a mesh of its own, and the `AF_*` environment that gives its processes the same."""
    base, http = free_mesh_ports()
    env = {
        "AF_BASE_PORT": str(base),
        "AF_HTTP_PORT": str(http),
        "AF_DATA_DIR": str(data_dir),
        "AF_CATALOG_DIR": str(catalog_dir),
        "AF_LOG_LEVEL": "INFO",
        "AF_DRAIN_SECONDS": "2",
    }
    if database_url:
        env["AF_DATABASE_URL"] = database_url
    settings = Settings(
        base_port=base,
        http_port=http,
        data_dir=data_dir,
        catalog_dir=catalog_dir,
        log_level="INFO",
        drain_seconds=2.0,
        database_url=database_url,
    )
    return settings, env


@contextmanager
def running_mesh(
    data_dir: Path,
    catalog_dir: Path,
    database_url: str | None = None,
    timeout: float = 120.0,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[tuple[Settings, Mesh]]:
    """All seven services as real processes with mTLS, ready (every health check SERVING); stopped after.
    `extra_env` adds settings for the services only (e.g. what the operator delegates)."""
    settings, env = isolated_settings(data_dir, catalog_dir, database_url)
    env.update(extra_env or {})
    mesh = Mesh(settings, env=env)
    asyncio.run(mesh.up(timeout=timeout))
    try:
        yield settings, mesh
    finally:
        mesh.down()
