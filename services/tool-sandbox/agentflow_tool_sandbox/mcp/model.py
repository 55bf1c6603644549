"""What an MCP server registration is: transport, call policy (timeout, retries, breaker) and grants."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from agentflow_runtime.breaker import BreakerConfig

from agentflow_tool_sandbox.spec import ORIGIN_API, ToolAccess

DEFAULT_TIMEOUT_SECONDS = 30.0
MAX_TIMEOUT_SECONDS = 3600.0
DEFAULT_MEMORY_BYTES = 1024 * 1024 * 1024


@dataclass(frozen=True)
class StdioTransport:
    """A local command speaking MCP on stdin/stdout; `pass_env` names variables of the service passed on."""

    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    pass_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class HttpTransport:
    """A streamable HTTP endpoint; `headers_from_env` maps a header to a variable of the service (secrets)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    headers_from_env: Mapping[str, str] = field(default_factory=dict)


Transport = StdioTransport | HttpTransport


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts to reach the server for one call, with exponential backoff between them."""

    max_attempts: int = 3
    initial_backoff_seconds: float = 0.2
    max_backoff_seconds: float = 2.0
    multiplier: float = 2.0

    def backoff(self, attempt: int) -> float:
        """Delay after failed attempt number `attempt` (1-based)."""
        delay = self.initial_backoff_seconds * self.multiplier ** (attempt - 1)
        return float(min(self.max_backoff_seconds, delay))


@dataclass(frozen=True)
class ServerSpec:
    """A registered MCP server. `tenant` is "" for a catalog server (every tenant sees its tools)."""

    server_id: str
    transport: Transport
    description: str = ""
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    access: ToolAccess = field(default_factory=ToolAccess)
    origin: str = ORIGIN_API
    tenant: str = ""
    create_time: datetime | None = None

    @property
    def name(self) -> str:
        """The resource name, `mcpServers/{server_id}`."""
        return f"mcpServers/{self.server_id}"

    @property
    def key(self) -> tuple[str, str]:
        """(tenant, server id): what identifies the server's connection and imported tools."""
        return (self.tenant, self.server_id)
