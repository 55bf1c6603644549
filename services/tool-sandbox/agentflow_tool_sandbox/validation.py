"""Checks a tool definition, listing every problem as (field, description)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from agentflow_tool_sandbox.spec import (
    MAX_CPU_SECONDS,
    MAX_MEMORY_BYTES,
    MAX_OUTPUT_BYTES,
    MAX_WALL_TIME_SECONDS,
    TOOL_ID_PATTERN,
    Limits,
    ToolSpec,
)

Violation = tuple[str, str]

ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SCHEMA_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})


def validate_tool(spec: ToolSpec, *, id_field: str = "tool_id", prefix: str = "") -> list[Violation]:
    """Every problem with `spec`; field paths are `prefix` + the Tool message's field names."""
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
    problems.extend(_validate_limits(spec.limits, f"{prefix}limits"))
    return problems


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
    }
    for name, (value, maximum) in bounds.items():
        if value < 0 or value > maximum:
            problems.append((f"{path}.{name}", f"must be between 0 and {maximum}"))
    return problems
