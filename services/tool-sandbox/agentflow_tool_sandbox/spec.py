"""What a tool is: its identity, how its process starts, and the limits one execution runs under."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agentflow_runtime.names import TOOL_ID

TOOL_ID_PATTERN = TOOL_ID
"""A tool id: lowercase letter first, then letters, digits or dashes; 63 characters at most."""

ORIGIN_CATALOG = "catalog"
ORIGIN_API = "api"
ORIGIN_MCP = "mcp"

DEFAULT_WALL_TIME_SECONDS = 30.0
DEFAULT_CPU_SECONDS = 10
DEFAULT_MEMORY_BYTES = 512 * 1024 * 1024
DEFAULT_OUTPUT_BYTES = 1024 * 1024
DEFAULT_MAX_PROCESSES = 32

MAX_WALL_TIME_SECONDS = 3600.0
MAX_CPU_SECONDS = 3600
MAX_MEMORY_BYTES = 16 * 1024 * 1024 * 1024
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
MAX_PROCESSES = 4096


@dataclass(frozen=True)
class Limits:
    """The execution profile's resource caps; zero in any field means the default."""

    wall_time_seconds: float = DEFAULT_WALL_TIME_SECONDS
    cpu_seconds: int = DEFAULT_CPU_SECONDS
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    output_bytes: int = DEFAULT_OUTPUT_BYTES
    max_processes: int = DEFAULT_MAX_PROCESSES
    """Processes and threads the tool may have at once (RLIMIT_NPROC of its own sandbox uid)."""

    def with_defaults(self) -> Limits:
        """These limits with every unset (zero) field replaced by its default."""
        return Limits(
            wall_time_seconds=self.wall_time_seconds or DEFAULT_WALL_TIME_SECONDS,
            cpu_seconds=self.cpu_seconds or DEFAULT_CPU_SECONDS,
            memory_bytes=self.memory_bytes or DEFAULT_MEMORY_BYTES,
            output_bytes=self.output_bytes or DEFAULT_OUTPUT_BYTES,
            max_processes=self.max_processes or DEFAULT_MAX_PROCESSES,
        )


@dataclass(frozen=True)
class EgressRule:
    """One allowed network destination: a host name (or IP literal) and a TCP port."""

    host: str
    port: int


@dataclass(frozen=True)
class Permissions:
    """What a tool may reach besides its own workdir; empty (the default) grants nothing.

    Paths are host paths, bound at the same place inside the sandbox. `env` names variables of the
    service's environment passed through to the tool (values from `ProcessSpec.env` are always set).
    """

    egress: tuple[EgressRule, ...] = ()
    read_only_paths: tuple[str, ...] = ()
    writable_paths: tuple[str, ...] = ()
    env: tuple[str, ...] = ()


NO_PERMISSIONS = Permissions()
"""The default profile permissions: nothing beyond the tool's own workdir."""


PYTHON_PLACEHOLDER = "{python}"
"""In a tool's argv (or a backend's command prefix): the interpreter running the tool sandbox service."""


def with_python(args: Iterable[str], python: str) -> list[str]:
    """`args` with every `{python}` replaced by the interpreter `python`."""
    return [arg.replace(PYTHON_PLACEHOLDER, python) for arg in args]


@dataclass(frozen=True)
class ProcessSpec:
    """How to start the tool: argv and the only environment variables it gets besides the base ones."""

    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolAccess:
    """Who may use a tool: roles, and tenants (`*` = any) for a tool every tenant sees."""

    roles: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()


@dataclass(frozen=True)
class McpBinding:
    """Where an imported tool lives: its MCP server (`tenant` "" for a catalog server) and remote name."""

    tenant: str
    server_id: str
    remote_name: str


@dataclass(frozen=True)
class ToolSpec:
    """A registered tool."""

    tool_id: str
    description: str
    input_schema: Mapping[str, Any]
    process: ProcessSpec
    limits: Limits = Limits()
    permissions: Permissions = Permissions()
    """The rest of the execution profile (deny by default)."""
    origin: str = ORIGIN_API
    create_time: datetime | None = None
    mcp: McpBinding | None = None
    """Set on a tool imported from an MCP server: ExecuteTool calls the server instead of a process."""
    access: ToolAccess | None = None
    """None on a native tool (the default grants); an imported tool's grants (none by default)."""

    @property
    def name(self) -> str:
        """The resource name, `tools/{tool_id}`."""
        return f"tools/{self.tool_id}"


def tool_id_from_name(name: str) -> str | None:
    """The tool id in a resource name `tools/{tool}`, None when `name` is not one."""
    prefix, _, tool_id = name.partition("/")
    if prefix != "tools" or not TOOL_ID_PATTERN.fullmatch(tool_id):
        return None
    return tool_id
