"""Loads the tool catalog: one YAML file per tool in `catalog/tools/`, checked before anything is served."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from agentflow_tool_sandbox.spec import ORIGIN_CATALOG, Limits, Permissions, ProcessSpec, ToolSpec
from agentflow_tool_sandbox.validation import Violation, validate_tool

TOOL_DIR_PLACEHOLDER = "{tool_dir}"
TOP_LEVEL_FIELDS = frozenset({"id", "description", "input_schema", "process", "limits"})
PROCESS_FIELDS = frozenset({"command", "env"})
LIMIT_FIELDS: dict[str, bool] = {
    "wall_time_seconds": True,
    "cpu_seconds": False,
    "memory_bytes": False,
    "output_bytes": False,
}
"""Each limit field and whether it may be fractional."""


class CatalogError(Exception):
    """The catalog holds invalid tools; `problems` lists each as (`file:field`, description)."""

    def __init__(self, problems: list[Violation]) -> None:
        super().__init__("invalid tool catalog: " + "; ".join(f"{f}: {d}" for f, d in problems))
        self.problems = problems


def load_catalog(directory: Path) -> list[ToolSpec]:
    """Every tool in `directory/*.yaml` (none when it does not exist), in id order.

    Raises CatalogError listing every problem of every file, duplicates included.
    """
    tools: list[ToolSpec] = []
    problems: list[Violation] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
        tool, found = parse_tool_file(path)
        problems.extend((f"{path.name}:{f}", d) for f, d in found)
        if tool is None:
            continue
        if tool.tool_id in seen:
            problems.append((f"{path.name}:id", f"duplicate of the tool in {seen[tool.tool_id]}"))
            continue
        seen[tool.tool_id] = path.name
        tools.append(tool)
    if problems:
        raise CatalogError(problems)
    return sorted(tools, key=lambda t: t.tool_id)


def parse_tool_file(path: Path) -> tuple[ToolSpec | None, list[Violation]]:
    """The tool a catalog file defines (None when it has problems) and every problem found."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, [("", f"cannot read: {exc}")]
    return parse_tool(document, tool_dir=path.parent.resolve())


def parse_tool(document: Any, *, tool_dir: Path) -> tuple[ToolSpec | None, list[Violation]]:
    """Build a tool from a parsed YAML document; `{tool_dir}` in the command becomes `tool_dir`."""
    if not isinstance(document, Mapping):
        return None, [("", "must be a mapping of tool fields")]
    problems: list[Violation] = [(str(k), "unknown field") for k in document if k not in TOP_LEVEL_FIELDS]
    tool_id = _string(document, "id", "id", problems)
    description = _string(document, "description", "description", problems)
    schema = document.get("input_schema", {})
    if not isinstance(schema, Mapping):
        problems.append(("input_schema", "must be a mapping (a JSON schema)"))
        schema = {}
    process = _process(document.get("process"), tool_dir, problems)
    limits = _limits(document.get("limits", {}), problems)
    spec = ToolSpec(
        tool_id=tool_id,
        description=description,
        input_schema=dict(schema),
        process=process,
        limits=limits,
        permissions=Permissions(read_only_paths=(str(tool_dir),)),
        origin=ORIGIN_CATALOG,
    )
    problems.extend(validate_tool(spec, id_field="id"))
    return (None if problems else spec), problems


def _string(document: Mapping[str, Any], key: str, field: str, problems: list[Violation]) -> str:
    value = document.get(key)
    if value is None:
        problems.append((field, "required"))
        return ""
    if not isinstance(value, str):
        problems.append((field, "must be a string"))
        return ""
    return value


def _process(raw: Any, tool_dir: Path, problems: list[Violation]) -> ProcessSpec:
    if not isinstance(raw, Mapping):
        problems.append(("process", "required: a mapping with `command` and optional `env`"))
        return ProcessSpec(command=())
    problems.extend((f"process.{k}", "unknown field") for k in raw if k not in PROCESS_FIELDS)
    command = raw.get("command")
    argv: list[str] = []
    if not isinstance(command, list):
        problems.append(("process.command", "must be a list of strings"))
    else:
        for index, arg in enumerate(command):
            if isinstance(arg, str):
                argv.append(arg.replace(TOOL_DIR_PLACEHOLDER, str(tool_dir)))
            else:
                problems.append((f"process.command[{index}]", "must be a string"))
    env = raw.get("env", {})
    if not isinstance(env, Mapping):
        problems.append(("process.env", "must be a mapping of names to strings"))
        env = {}
    bad = [k for k, v in env.items() if not isinstance(k, str) or not isinstance(v, str)]
    problems.extend((f"process.env.{k}", "name and value must be strings") for k in bad)
    clean = {k: v for k, v in env.items() if k not in bad}
    return ProcessSpec(command=tuple(argv), env=clean)


def _limits(raw: Any, problems: list[Violation]) -> Limits:
    if not isinstance(raw, Mapping):
        problems.append(("limits", "must be a mapping"))
        return Limits()
    problems.extend((f"limits.{k}", "unknown field") for k in raw if k not in LIMIT_FIELDS)
    values: dict[str, Any] = {}
    for key, fractional in LIMIT_FIELDS.items():
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append((f"limits.{key}", "must be a number"))
        elif fractional:
            values[key] = float(value)
        elif isinstance(value, int):
            values[key] = value
        else:
            problems.append((f"limits.{key}", "must be an integer"))
    return Limits(**values)
