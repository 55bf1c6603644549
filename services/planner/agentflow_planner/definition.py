"""Workflow definitions: the authoring format, its parsing and its validation.

A definition is a YAML or JSON document (or the equivalent dict)::

    id: research-note            # required; lowercase letters, digits, '-'; the default workflow id
    display_name: Research note  # optional
    description: ...             # optional
    kind: dag                    # optional: dag (default) | sequential | fsm (see fsm.py) | bt (see bt.py)
    input:                       # optional, JSON-Schema-like description of the run input
      type: object
      properties:
        topic: {type: string, description: What to write about}
      required: [topic]
    steps:                       # required, non-empty
      - id: draft                # required; lowercase letters, digits, '_' or '-'; unique
        kind: model              # required: model | tool | memory | agent | value
        needs: []                # optional: ids of steps that must finish first
        description: ...         # optional
        prompt: "Write about {{ input.topic }}"   # kind parameters, see step_params
    output:                      # optional; any value, strings may be templates
      text: "{{ steps.draft.output.text }}"

fsm and bt definitions replace `steps` with their own fields; each kind's front end validates them and
yields plan steps (`StepDefinition`), so every kind compiles to the same plan graph.
`sequential` is a dag in which, when no step declares `needs`, each step needs the previous one.
Templates (`{{ expr }}`, see `agentflow_runtime.templates`) may read `input.<field>` and the steps upstream
of where they appear (transitive `needs`); the output may read any step.

`check_definition` returns the parsed definition or every violation found; `parse_definition` raises
`DefinitionError` carrying them all.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from agentflow_runtime.names import WORKFLOW_ID

from . import bt, fsm, graph
from .step_definition import StepDefinition
from .step_params import COMMON_FIELDS, StepKind, normalize_params
from .template_checks import check_templates
from .violations import DefinitionError, Violation, Violations

__all__ = [
    "DefinitionError",
    "StepDefinition",
    "Violation",
    "WorkflowDefinition",
    "check_definition",
    "load_source",
    "parse_definition",
]

STEP_ID = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
WORKFLOW_KINDS = ("dag", "sequential", "fsm", "bt")
_COMMON_TOP = frozenset({"id", "display_name", "description", "kind", "input", "output"})
_KIND_TOP = {
    "dag": frozenset({"steps"}),
    "sequential": frozenset({"steps"}),
    "fsm": frozenset({"states", "initial", "terminal", "max_transitions"}),
    "bt": frozenset({"root"}),
}
_INPUT_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})


@dataclass(frozen=True)
class WorkflowDefinition:
    """A validated definition; `document` is the parsed source as written."""

    id: str
    display_name: str
    description: str
    kind: str
    input_schema: dict[str, Any] | None
    steps: tuple[StepDefinition, ...]
    output: Any
    document: dict[str, Any]


def load_source(source: str | Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[Violation]]:
    """Parses YAML/JSON text (or copies a mapping) into a JSON-compatible dict."""
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            return None, [Violation("source", f"not valid YAML or JSON{where}: {problem}")]
    if not isinstance(data, dict):
        return None, [Violation("source", "the definition must be an object (a mapping of fields)")]
    out = Violations()
    _check_json_values(data, "", out)
    return (None if out else data), out.items


def _check_json_values(value: Any, path: str, out: Violations) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                out.add(path or "source", f"key {key!r} must be a string")
            _check_json_values(item, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json_values(item, f"{path}[{i}]", out)
    elif isinstance(value, datetime.date | bytes | set):
        out.add(path, f"unsupported value of type {type(value).__name__}; quote it to make it a string")
    elif isinstance(value, float) and not math.isfinite(value):
        out.add(path, "numbers must be finite")


def _optional_text(data: Mapping[str, Any], key: str, out: Violations) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        out.add(key, "must be a string")
        return ""
    return value


def _input_fields(schema: Any, out: Violations) -> set[str] | None:
    """Checks the input schema; returns the declared field names, or None when any field is allowed."""
    if schema is None:
        return None
    if not isinstance(schema, Mapping):
        out.add("input", "must be an object (a JSON-Schema-like description of the run input)")
        return None
    if schema.get("type", "object") != "object":
        out.add("input.type", "the run input is always an object")
    properties = schema.get("properties")
    if properties is None:
        return None
    if not isinstance(properties, Mapping):
        out.add("input.properties", "must be an object of field schemas")
        return None
    for name, spec in properties.items():
        if not isinstance(spec, Mapping):
            out.add(f"input.properties.{name}", "must be an object")
        elif "type" in spec and spec["type"] not in _INPUT_TYPES:
            out.add(f"input.properties.{name}.type", f"must be one of {', '.join(sorted(_INPUT_TYPES))}")
    required = schema.get("required", [])
    if not isinstance(required, list):
        out.add("input.required", "must be a list of field names")
    else:
        for i, name in enumerate(required):
            if name not in properties:
                out.add(f"input.required[{i}]", f"{name!r} is not in input.properties")
    return set(properties)


def _step_ids(steps: list[Any], out: Violations) -> list[str | None]:
    ids: list[str | None] = []
    first_index: dict[str, int] = {}
    for i, step in enumerate(steps):
        step_id = step.get("id") if isinstance(step, Mapping) else None
        if not isinstance(step, Mapping):
            out.add(f"steps[{i}]", "must be an object")
        elif step_id is None:
            out.add(f"steps[{i}].id", "is required")
        elif not isinstance(step_id, str) or not STEP_ID.match(step_id):
            out.add(f"steps[{i}].id", "must be lowercase letters, digits, '_' or '-', starting with a letter")
            step_id = None
        elif step_id in first_index:
            out.add(
                f"steps[{i}].id",
                f"duplicate step id {step_id!r} (first used by steps[{first_index[step_id]}])",
            )
            step_id = None
        else:
            first_index[step_id] = i
        ids.append(step_id)
    return ids


def _needs(steps: list[Any], ids: list[str | None], kind: str, out: Violations) -> dict[str, list[str]]:
    """Each valid step's needs (known ids only); reports bad entries."""
    known = {step_id for step_id in ids if step_id}
    declared = any(isinstance(s, Mapping) and "needs" in s for s in steps)
    needs: dict[str, list[str]] = {}
    previous: str | None = None
    for i, (step, step_id) in enumerate(zip(steps, ids, strict=True)):
        if not isinstance(step, Mapping):
            continue
        raw = step.get("needs", [])
        if kind == "sequential" and not declared:
            raw = [previous] if previous else []
        valid: list[str] = []
        if not isinstance(raw, list):
            out.add(f"steps[{i}].needs", "must be a list of step ids")
            raw = []
        for j, dep in enumerate(raw):
            where = f"steps[{i}].needs[{j}]"
            if not isinstance(dep, str):
                out.add(where, "must be a step id")
            elif dep not in known:
                out.add(where, f"unknown step {dep!r}")
            elif dep == step_id:
                out.add(where, "a step cannot need itself")
            elif dep in valid:
                out.add(where, f"{dep!r} is listed twice")
            else:
                valid.append(dep)
        if step_id:
            needs[step_id] = valid
            previous = step_id
    return needs


def check_definition(
    source: str | Mapping[str, Any],
) -> tuple[WorkflowDefinition | None, list[Violation]]:
    """Parses and validates a definition; returns it when there are no violations, else every violation."""
    data, problems = load_source(source)
    if data is None:
        return None, problems
    out = Violations()
    workflow_id = data.get("id")
    if workflow_id is None:
        out.add("id", "is required")
    elif not isinstance(workflow_id, str) or not WORKFLOW_ID.fullmatch(workflow_id):
        out.add("id", "must be 1-63 lowercase letters, digits or '-', starting with a letter")
    display_name = _optional_text(data, "display_name", out)
    description = _optional_text(data, "description", out)
    kind = data.get("kind", "dag")
    if kind not in WORKFLOW_KINDS:
        out.add("kind", f"unknown workflow kind {kind!r} (known: {', '.join(WORKFLOW_KINDS)})")
        kind = "dag"
    allowed = _COMMON_TOP | _KIND_TOP[kind]
    for key in data:
        if key not in allowed:
            out.add(key, f"unknown field for a `{kind}` workflow (allowed: {', '.join(sorted(allowed))})")
    input_fields = _input_fields(data.get("input"), out)
    front_end = {"fsm": fsm.compile_states, "bt": bt.compile_tree}.get(kind, _dag_steps)
    parsed, output_scope = front_end(data, kind, out, input_fields)
    check_templates(
        data.get("output"), "output", out, upstream=None, input_fields=input_fields, **output_scope
    )

    if out:
        return None, out.items
    definition = WorkflowDefinition(
        id=str(workflow_id),
        display_name=display_name,
        description=description,
        kind=str(kind),
        input_schema=data.get("input"),
        steps=tuple(parsed),
        output=data.get("output"),
        document=json.loads(json.dumps(data)),
    )
    return definition, []


def _dag_steps(
    data: Mapping[str, Any], kind: str, out: Violations, input_fields: set[str] | None
) -> tuple[list[StepDefinition], dict[str, Any]]:
    """The steps of a dag (or sequential) workflow, and what its output may read."""
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        out.add("steps", "is required: a non-empty list of steps")
        steps = []
    ids = _step_ids(steps, out)
    needs = _needs(steps, ids, kind, out)
    for cycle in graph.find_cycles([i for i in ids if i], needs):
        out.add(f"steps[{ids.index(cycle[0])}].needs", f"dependency cycle: {' -> '.join(cycle)}")

    known = set(needs)
    parsed: list[StepDefinition] = []
    for i, (step, step_id) in enumerate(zip(steps, ids, strict=True)):
        if not isinstance(step, Mapping):
            continue
        path = f"steps[{i}]"
        step_kind = step.get("kind", StepKind.WORKFLOW.value if "workflow" in step else None)
        if step_kind not in {k.value for k in StepKind}:
            known_kinds = ", ".join(k.value for k in StepKind)
            out.add(f"{path}.kind", f"unknown step kind {step_kind!r} (known: {known_kinds})")
            continue
        desc = step.get("description", "")
        if not isinstance(desc, str):
            out.add(f"{path}.description", "must be a string")
        params = normalize_params(StepKind(step_kind), step, path, out)
        own = {key: value for key, value in step.items() if key not in COMMON_FIELDS or key == "when"}
        upstream = graph.ancestors(step_id, needs) if step_id else set()
        check_templates(own, path, out, known_steps=known, upstream=upstream, input_fields=input_fields)
        if step_id:
            parsed.append(
                StepDefinition(step_id, StepKind(step_kind), tuple(needs[step_id]), params, str(desc))
            )
    return parsed, {"known_steps": known}


def parse_definition(source: str | Mapping[str, Any]) -> WorkflowDefinition:
    """Parses and validates a definition; raises `DefinitionError` with every violation."""
    definition, violations = check_definition(source)
    if definition is None:
        raise DefinitionError(violations)
    return definition
