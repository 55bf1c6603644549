"""One mesh per storage backend, shared by the integration tests (starting seven processes is slow)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agentflow_cli.supervisor import Mesh
from agentflow_cli.tokens import dev_token
from agentflow_runtime.settings import Settings

from tests.support import MESH_ENV, REPO, catalog_mesh


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Mesh]]:
    data_dir = tmp_path_factory.mktemp(f"mesh-{request.param}")
    with catalog_mesh(request.param, data_dir, REPO / "catalog", MESH_ENV) as running:
        yield running


@pytest.fixture(scope="session")
def settings(mesh: tuple[Settings, Mesh]) -> Settings:
    return mesh[0]


@pytest.fixture(scope="session")
def edge(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.http_port}"


@pytest.fixture(scope="session")
def token(settings: Settings) -> str:
    return dev_token(settings, subject="alice", tenant="acme", role="admin")
