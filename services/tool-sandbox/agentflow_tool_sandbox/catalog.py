"""Loads the tool catalog: one YAML file per tool in `catalog/tools/`, checked before anything is served."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from agentflow_tool_sandbox.spec import ORIGIN_CATALOG, EgressRule, Limits, Permissions, ProcessSpec, ToolSpec
from agentflow_tool_sandbox.validation import Violation, valid_host, validate_tool

TOOL_DIR_PLACEHOLDER = "{tool_dir}"
TOP_LEVEL_FIELDS = frozenset({"id", "description", "input_schema", "process", "limits", "profile"})
PROCESS_FIELDS = frozenset({"command", "env"})
LIMIT_FIELDS: dict[str, bool] = {
    "wall_time_seconds": True,
    "cpu_seconds": False,
    "memory_bytes": False,
    "output_bytes": False,
}
"""Each limit field of `limits:` and whether it may be fractional."""
PROFILE_LIMIT_FIELDS: dict[str, bool] = {**LIMIT_FIELDS, "max_processes": False}
PROFILE_LIST_FIELDS = ("read_only_paths", "writable_paths", "env")


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
    legacy = _limit_values(document.get("limits", {}), "limits", LIMIT_FIELDS, problems)
    raw_profile = document.get("profile", {})
    if not isinstance(raw_profile, Mapping):
        problems.append(("profile", "must be a mapping"))
        raw_profile = {}
    known = {*PROFILE_LIMIT_FIELDS, *PROFILE_LIST_FIELDS, "egress"}
    problems.extend((f"profile.{k}", "unknown field") for k in raw_profile if k not in known)
    caps = {k: v for k, v in raw_profile.items() if k in PROFILE_LIMIT_FIELDS}
    values = _limit_values(caps, "profile", PROFILE_LIMIT_FIELDS, problems)
    problems.extend(
        (f"profile.{k}", "also given in `limits`: give each limit once") for k in values if k in legacy
    )
    permissions = _permissions(raw_profile, problems)
    spec = ToolSpec(
        tool_id=tool_id,
        description=description,
        input_schema=dict(schema),
        process=process,
        limits=Limits(**{**legacy, **values}),
        permissions=permissions,
        origin=ORIGIN_CATALOG,
    )
    problems.extend(validate_tool(spec, id_field="id", limits_field="profile" if values else "limits"))
    if problems:
        return None, problems
    # A catalog tool always reads its own directory (its scripts live there).
    readable = (str(tool_dir), *permissions.read_only_paths)
    return replace(spec, permissions=replace(permissions, read_only_paths=readable)), problems


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


def _limit_values(
    raw: Any, section: str, fields: Mapping[str, bool], problems: list[Violation]
) -> dict[str, Any]:
    """The limit values given in a `limits:` or `profile:` mapping (only those given)."""
    if not isinstance(raw, Mapping):
        problems.append((section, "must be a mapping"))
        return {}
    if section == "limits":
        problems.extend((f"limits.{k}", "unknown field") for k in raw if k not in fields)
    values: dict[str, Any] = {}
    for key, fractional in fields.items():
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append((f"{section}.{key}", "must be a number"))
        elif fractional:
            values[key] = float(value)
        elif isinstance(value, int):
            values[key] = value
        else:
            problems.append((f"{section}.{key}", "must be an integer"))
    return values


def _permissions(raw: Mapping[str, Any], problems: list[Violation]) -> Permissions:
    """The egress rules, paths and variable names of a `profile:` mapping (shape only; see validation)."""
    lists: dict[str, tuple[str, ...]] = {}
    for key in PROFILE_LIST_FIELDS:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append((f"profile.{key}", "must be a list of strings"))
            value = []
        lists[key] = tuple(value)
    rules: list[EgressRule] = []
    egress = raw.get("egress", [])
    if not isinstance(egress, list):
        problems.append(("profile.egress", "must be a list of {host, port} mappings"))
        egress = []
    for index, rule in enumerate(egress):
        where = f"profile.egress[{index}]"
        if not isinstance(rule, Mapping) or set(rule) != {"host", "port"}:
            problems.append((where, "must be a mapping with exactly `host` and `port`"))
            continue
        # Checked here in full (not left to `validate_tool`), so the reported indexes are the file's.
        host, port = rule["host"], rule["port"]
        valid = True
        if not isinstance(host, str) or not valid_host(host):
            problems.append((f"{where}.host", "must be a DNS name or an IP literal (no wildcards, no port)"))
            valid = False
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append((f"{where}.port", "must be an integer between 1 and 65535"))
            valid = False
        if valid:
            rules.append(EgressRule(host=host, port=port))
    return Permissions(
        egress=tuple(rules),
        read_only_paths=lists["read_only_paths"],
        writable_paths=lists["writable_paths"],
        env=lists["env"],
    )
