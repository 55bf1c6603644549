"""Settings: environment (`AF_*`) over a YAML file (`AF_CONFIG`) over defaults. Frozen once loaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

SERVICES: tuple[str, ...] = (
    "gateway",
    "planner",
    "worker",
    "tool-sandbox",
    "model-gateway",
    "memory",
    "audit",
)
"""Every service of the mesh, in start order reversed dependencies aside (see `af up`)."""

DEFAULT_BASE_PORT = 50050
METRICS_PORT_OFFSET = 1000
DEFAULT_HTTP_PORT = 8080
DEV_JWT_SECRET = "agentflow-dev-secret-change-me-in-production"
"""Public, for local use only: the gateway warns at start while it is in use."""


class Settings(BaseSettings):
    """What a service (or the CLI) needs to know about its environment."""

    model_config = SettingsConfigDict(env_prefix="AF_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    base_port: int = Field(
        DEFAULT_BASE_PORT, description="gRPC port of `gateway`; the others follow in order"
    )
    ports: dict[str, int] = Field(default_factory=dict, description="explicit gRPC port per service")
    http_port: int = Field(DEFAULT_HTTP_PORT, description="REST/JSON edge port of the gateway")
    data_dir: Path = Path(".agentflow")
    database_url: str | None = Field(None, description="SQLAlchemy URL; unset = one SQLite file per service")
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset = local mode in data_dir")
    cert_dir: Path | None = None
    catalog_dir: Path = Path("catalog")
    jwt_secret: str = DEV_JWT_SECRET
    log_level: str = "INFO"
    drain_seconds: float = 5.0
    worker_lease_seconds: float = Field(
        15.0, gt=0, description="How long a worker's claim on a run lasts without a heartbeat"
    )
    worker_poll_seconds: float = Field(
        1.0, gt=0, description="How often a worker looks for runs to claim (new or orphaned)"
    )
    metrics_enabled: bool = True
    sandbox_backend: Literal["bwrap", "process"] = Field(
        "bwrap",
        description="tool sandbox: `bwrap` (isolated, default) or `process` (UNSAFE, development only)",
    )
    sandbox_bwrap: str = Field("bwrap", description="the bubblewrap executable the tool sandbox runs")
    sandbox_api_path_roots: list[str] = Field(
        default_factory=list, description="host paths below which API-registered tools may be granted paths"
    )
    sandbox_api_env: list[str] = Field(
        default_factory=list, description="host variables API-registered tools may be granted"
    )
    mcp_api_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="hosts (`host` or `host:port`) API-registered HTTP MCP servers may be on although they"
        " are loopback, link-local, private or otherwise not public",
    )
    tracing: bool = Field(True, description="OpenTelemetry spans on every RPC (server and client)")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("AF_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=Path(config_file)))
        return tuple(sources)

    def port(self, service: str) -> int:
        """gRPC port of a service."""
        if service in self.ports:
            return self.ports[service]
        if service not in SERVICES:
            raise KeyError(f"unknown service {service!r}")
        return self.base_port + SERVICES.index(service)

    def address(self, service: str) -> str:
        """`host:port` on which a service's gRPC server listens."""
        return f"{self.host}:{self.port(service)}"

    def metrics_port(self, service: str) -> int:
        """Port of a service's Prometheus `/metrics` endpoint."""
        return self.port(service) + METRICS_PORT_OFFSET

    @property
    def certs(self) -> Path:
        """Where the CA, service and client certificates live."""
        return self.cert_dir if self.cert_dir is not None else self.data_dir / "certs"

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (settings are frozen)."""
        return self.model_copy(update=changes)


def load_settings(**overrides: Any) -> Settings:
    """Settings from env and file, with explicit overrides on top."""
    return Settings(**overrides)
