"""Tool arguments: checked against the tool's input schema (required, types, enums), and digested."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from agentflow_tool_sandbox.validation import Violation


def validate_arguments(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> list[Violation]:
    """Every way `arguments` break the schema's `required`, property `type`/`enum` and
    `additionalProperties: false`; fields are named `arguments.<property>`."""
    problems: list[Violation] = []
    properties: Mapping[str, Any] = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in arguments:
            problems.append((f"arguments.{name}", "required"))
    for name, value in arguments.items():
        prop = properties.get(name)
        if prop is None:
            if schema.get("additionalProperties") is False:
                problems.append((f"arguments.{name}", "not a property of this tool"))
            continue
        problems.extend(_check_value(f"arguments.{name}", prop, value))
    return problems


def args_digest(arguments: Mapping[str, Any]) -> str:
    """sha256 (hex) of the arguments' canonical JSON: sorted keys, no whitespace, UTF-8."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_value(field: str, prop: Mapping[str, Any], value: Any) -> list[Violation]:
    problems: list[Violation] = []
    declared = prop.get("type")
    kinds = declared if isinstance(declared, list) else [declared] if declared else []
    if kinds and not any(_CHECKS[k](value) for k in kinds if k in _CHECKS):
        problems.append((field, f"must be of type {' or '.join(kinds)}"))
    allowed = prop.get("enum")
    if isinstance(allowed, list) and value not in allowed:
        problems.append((field, f"must be one of {json.dumps(allowed)}"))
    return problems


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": _is_integer,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
