"""Checks a tool definition, listing every problem as (field, description)."""

from __future__ import annotations

import ipaddress
import math
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentflow_tool_sandbox.spec import (
    MAX_CPU_SECONDS,
    MAX_MEMORY_BYTES,
    MAX_OUTPUT_BYTES,
    MAX_PROCESSES,
    MAX_WALL_TIME_SECONDS,
    TOOL_ID_PATTERN,
    Limits,
    Permissions,
    ToolSpec,
)

Violation = tuple[str, str]

ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SCHEMA_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
MIN_MEMORY_BYTES = 16 * 1024 * 1024
"""Below this no interpreter starts: a smaller (non-zero) memory cap is a mistake, not a limit."""
MAX_PROFILE_ENTRIES = 64
RESERVED_ENV_PREFIX = "AF_"
"""The service's own configuration (database URL, JWT secret, ...): never passed to a tool."""
NEVER_BOUND = ("/proc", "/sys", "/dev")
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/boot")
"""Read-only already (or never writable): a writable grant below them is refused."""


@dataclass(frozen=True)
class Delegation:
    """What the operator lets API-registered tools and MCP servers ask for (catalog ones, the operator's own,
    may ask for any valid path or variable): host paths below `path_roots`, variables named in `env`.

    The one rule for both: `path_problem` and `env_problem` below (`AF_SANDBOX_API_PATH_ROOTS`,
    `AF_SANDBOX_API_ENV`)."""

    path_roots: tuple[str, ...] = ()
    env: tuple[str, ...] = ()


NOTHING_DELEGATED = Delegation()


def validate_tool(
    spec: ToolSpec,
    *,
    id_field: str = "tool_id",
    prefix: str = "",
    delegation: Delegation | None = None,
    limits_field: str = "profile",
) -> list[Violation]:
    """Every problem with `spec`; field paths are `prefix` + the Tool message's field names, the caps'
    under `limits_field` (`limits` when they came from the older `limits` field).

    `delegation` limits the host paths and variables the profile may name (an API-registered tool);
    None = any valid one (a catalog tool).
    """
    problems: list[Violation] = []
    if not TOOL_ID_PATTERN.fullmatch(spec.tool_id):
        problems.append((id_field, f"must match {TOOL_ID_PATTERN.pattern}"))
    elif "--" in spec.tool_id:
        problems.append(
            (id_field, "must not contain `--`: it separates server and tool in imported MCP tools")
        )
    if not spec.description.strip():
        problems.append((f"{prefix}description", "required"))
    problems.extend(validate_schema(spec.input_schema, f"{prefix}input_schema"))
    problems.extend(_validate_process(spec, f"{prefix}process"))
    problems.extend(_validate_limits(spec.limits, f"{prefix}{limits_field}"))
    problems.extend(validate_permissions(spec.permissions, f"{prefix}profile", delegation))
    return problems


def validate_permissions(
    permissions: Permissions, path: str, delegation: Delegation | None
) -> list[Violation]:
    """Problems with a profile's egress rules, paths and passed variables."""
    problems: list[Violation] = []
    for name, entries in (
        ("egress", permissions.egress),
        ("read_only_paths", permissions.read_only_paths),
        ("writable_paths", permissions.writable_paths),
        ("env", permissions.env),
    ):
        if len(entries) > MAX_PROFILE_ENTRIES:
            problems.append((f"{path}.{name}", f"at most {MAX_PROFILE_ENTRIES} entries"))
    for index, rule in enumerate(permissions.egress):
        where = f"{path}.egress[{index}]"
        if not valid_host(rule.host):
            problems.append((f"{where}.host", "must be a DNS name or an IP literal (no wildcards, no port)"))
        if not 1 <= rule.port <= 65535:
            problems.append((f"{where}.port", "must be between 1 and 65535"))
    for name, writable in (("read_only_paths", False), ("writable_paths", True)):
        paths: Sequence[str] = getattr(permissions, name)
        for index, value in enumerate(paths):
            problem = path_problem(value, writable=writable, delegation=delegation)
            if problem is not None:
                problems.append((f"{path}.{name}[{index}]", problem))
    problems.extend(_overlap_problems(permissions, path))
    for index, name in enumerate(permissions.env):
        env = env_problem(name, delegation)
        if env is not None:
            problems.append((f"{path}.env[{index}]", env))
    return problems


def env_problem(name: str, delegation: Delegation | None) -> str | None:
    """Why the service's variable `name` may not be handed over (to a tool, or to an MCP server as a
    variable or a header); None when it may. `delegation` None = any but `AF_*` (catalog entries)."""
    if not ENV_NAME_PATTERN.fullmatch(name):
        return "not a valid environment variable name"
    if name.upper().startswith(RESERVED_ENV_PREFIX):
        return f"`{RESERVED_ENV_PREFIX}*` variables configure the service and are never passed"
    if delegation is not None and name not in delegation.env:
        return "not a variable the operator lets API-registered tools and MCP servers receive"
    return None


def valid_host(host: str) -> bool:
    """A DNS name (labels of letters, digits and inner dashes; 253 characters at most) or an IP literal."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(HOST_LABEL.fullmatch(label) for label in name.split("."))


def path_problem(value: str, *, writable: bool, delegation: Delegation | None) -> str | None:
    """Why host path `value` may not be bound into a sandbox (read-only, or `writable`); None when it may.
    `delegation` None = any valid path (catalog entries)."""
    if not value.startswith("/"):
        return "must be an absolute path"
    if "\0" in value or any(part in (".", "..") for part in value.split("/")):
        return "must not contain `.` or `..` components (or NUL)"
    if posixpath.normpath(value) != value:
        return "must be normalized (no `//`, no trailing `/`)"
    if value == "/":
        return "the whole host filesystem cannot be granted"
    if _below(value, NEVER_BOUND):
        return "/proc, /sys and /dev are the sandbox's own"
    if writable and _below(value, SYSTEM_PATHS):
        return "system paths are never writable"
    if delegation is not None and not _below(value, delegation.path_roots):
        return "not below a path the operator lets API-registered tools and MCP servers use"
    return None


def _overlap_problems(permissions: Permissions, path: str) -> list[Violation]:
    """A path equal to, below or above one of the profile's writable paths (other than that entry itself):
    the tool could plant a symlink (or anything) in the writable one for its bind of the other."""
    problems: list[Violation] = []
    writable = permissions.writable_paths
    for name in ("read_only_paths", "writable_paths"):
        for index, value in enumerate(getattr(permissions, name)):
            for other_index, other in enumerate(writable):
                if name == "writable_paths" and other_index == index:
                    continue
                if _below(value, (other,)) or _below(other, (value,)):
                    problems.append(
                        (
                            f"{path}.{name}[{index}]",
                            f"overlaps writable_paths[{other_index}] ({other}): a path must not be, "
                            "contain or lie below another writable path of the profile",
                        )
                    )
                    break
    return problems


def _below(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def validate_schema(schema: Mapping[str, Any], path: str) -> list[Violation]:
    """Problems with the parts of a JSON schema that argument validation relies on."""
    problems: list[Violation] = []
    declared = schema.get("type")
    if declared is not None and declared != "object":
        problems.append((f"{path}.type", "the arguments schema must describe an object"))
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        problems.append((f"{path}.properties", "must be an object"))
        properties = {}
    for key, prop in properties.items():
        if not isinstance(prop, Mapping):
            problems.append((f"{path}.properties.{key}", "must be an object"))
            continue
        kinds = prop.get("type")
        listed = kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []
        if any(kind not in SCHEMA_TYPES for kind in listed):
            problems.append((f"{path}.properties.{key}.type", f"must be one of {sorted(SCHEMA_TYPES)}"))
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        problems.append((f"{path}.required", "must be a list of property names"))
    return problems


def _validate_process(spec: ToolSpec, path: str) -> list[Violation]:
    problems: list[Violation] = []
    command = spec.process.command
    if not command:
        problems.append((f"{path}.command", "required: at least the program to run"))
    for index, arg in enumerate(command):
        if index == 0 and not arg:
            problems.append((f"{path}.command[0]", "the program must not be empty"))
        if "\0" in arg:
            problems.append((f"{path}.command[{index}]", "must not contain NUL"))
    for key, value in spec.process.env.items():
        if not ENV_NAME_PATTERN.fullmatch(key):
            problems.append((f"{path}.env.{key}", "not a valid environment variable name"))
        if "\0" in value:
            problems.append((f"{path}.env.{key}", "must not contain NUL"))
    return problems


def _validate_limits(limits: Limits, path: str) -> list[Violation]:
    problems: list[Violation] = []
    wall = limits.wall_time_seconds
    if not math.isfinite(wall) or wall < 0 or wall > MAX_WALL_TIME_SECONDS:
        problems.append((f"{path}.wall_time_seconds", f"must be between 0 and {MAX_WALL_TIME_SECONDS:g}"))
    bounds = {
        "cpu_seconds": (limits.cpu_seconds, MAX_CPU_SECONDS),
        "memory_bytes": (limits.memory_bytes, MAX_MEMORY_BYTES),
        "output_bytes": (limits.output_bytes, MAX_OUTPUT_BYTES),
        "max_processes": (limits.max_processes, MAX_PROCESSES),
    }
    for name, (value, maximum) in bounds.items():
        if value < 0 or value > maximum:
            problems.append((f"{path}.{name}", f"must be between 0 and {maximum}"))
    if 0 < limits.memory_bytes < MIN_MEMORY_BYTES:
        problems.append((f"{path}.memory_bytes", f"0 (the default) or at least {MIN_MEMORY_BYTES}"))
    return problems
