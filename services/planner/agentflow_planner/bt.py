"""bt workflows: behavior trees compiled into the one plan graph.

    kind: bt
    root:
      sequence:                            # children in order; fails at the first child that fails
        - {id: fetch, kind: tool, tool: http-get, arguments: {url: "{{ input.url }}"}}
        - selector:                        # children in order until one succeeds; fails if all fail
            - condition: "{{ steps.fetch.output.status == 200 }}"
            - retry: {max_attempts: 3}     # decorators wrap a leaf: its retry policy ...
              timeout: 20                  # ... and its timeout_seconds
              do: {id: fallback, kind: model, prompt: "..."}
        - parallel:                        # children at once; succeeds when all (or `success: one`) do
            - {id: a, kind: tool, tool: word-count, arguments: {text: "..."}}
            - {id: b, kind: model, prompt: "..."}
          success: all

Leaves are steps of any kind with an `id` (templates read `input` and `steps.<id>` of steps that ran before);
a `condition` succeeds when its expression is true. Composites and conditions may carry an `id`; without one
they are named `<kind>@<position>` (`root`, then child indexes: `selector@1`, `sequence@1.0`), stable for a
given tree shape.

Compilation: every node becomes plan steps whose result is one step: the leaf itself, a value step for a
condition (`require` is the expression), or a value step per composite that needs all its children (`join:
any`) and requires their combination. A node that runs after another gets its `when` from the other's
status: the next child of a sequence runs when the previous one SUCCEEDED, of a selector when it FAILED.
Nodes under a selector (or a `success: one` parallel) carry `on_error: continue` so their failure is an
outcome, not the end of the run; elsewhere a failure fails the run, as the tree's root would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import graph
from .step_definition import StepDefinition
from .step_params import COMMON_FIELDS, StepKind, normalize_params
from .template_checks import check_templates
from .violations import Violations

__all__ = ["COMPOSITES", "compile_tree"]

COMPOSITES = ("sequence", "selector", "parallel")
DECORATORS = ("retry", "timeout")
_LEAF_FORBIDDEN = ("needs", "when", "join", "on_error")
_PARALLEL_SUCCESS = ("all", "one")


def _ok(step_id: str) -> str:
    return f'steps[{json.dumps(step_id)}].status == "SUCCEEDED"'


def _failed(step_id: str) -> str:
    return f'steps[{json.dumps(step_id)}].status == "FAILED"'


@dataclass
class _Tree:
    """What compiling a tree accumulates."""

    out: Violations
    steps: list[StepDefinition] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)
    """Step id -> path of the node that declared it."""
    checks: list[tuple[str, str, Any]] = field(default_factory=list)
    """(step id, path, templated fields) to check once the graph is known."""

    def claim(self, step_id: Any, path: str) -> str | None:
        from .definition import STEP_ID

        if not isinstance(step_id, str) or not STEP_ID.match(step_id):
            self.out.add(
                f"{path}.id", "must be lowercase letters, digits, '_' or '-', starting with a letter"
            )
            return None
        if step_id in self.ids:
            self.out.add(f"{path}.id", f"duplicate id {step_id!r} (first used at {self.ids[step_id]})")
            return None
        self.ids[step_id] = path
        return step_id

    def add(self, step: StepDefinition, path: str) -> str:
        self.steps.append(step)
        self.ids.setdefault(step.id, path)
        return step.id


def _reject_unknown(
    out: Violations, node: Mapping[str, Any], path: str, what: str, allowed: list[str]
) -> None:
    for key in sorted(set(node) - set(allowed)):
        out.add(f"{path}.{key}", f"unknown {what} field (allowed: {', '.join(allowed)})")


def _node_id(tree: _Tree, node: Mapping[str, Any], path: str, unnamed: str) -> str | None:
    """The node's own `id` (claimed), else its positional name `unnamed`."""
    return tree.claim(node["id"], path) if "id" in node else unnamed


def _entry(params: dict[str, Any], when: str | None, guarded: bool) -> dict[str, Any]:
    if when is not None:
        params["when"] = "{{ " + when + " }}"
    if guarded:
        params["on_error"] = "continue"
    return params


def _leaf(
    tree: _Tree, node: Mapping[str, Any], path: str, deps: list[str], when: str | None, guarded: bool
) -> str | None:
    out = tree.out
    step_id = tree.claim(node.get("id"), path) if "id" in node else None
    if "id" not in node:
        out.add(f"{path}.id", "a leaf step needs an `id`")
    kind = node.get("kind")
    if kind not in {k.value for k in StepKind}:
        known = ", ".join(k.value for k in StepKind)
        out.add(f"{path}.kind", f"unknown step kind {kind!r} (known: {known})")
        return step_id
    if kind == StepKind.WORKFLOW.value:
        out.add(f"{path}.kind", "a sub-workflow is a dag step; a tree leaf cannot be one")
        return step_id
    for key in _LEAF_FORBIDDEN:
        if key in node:
            out.add(f"{path}.{key}", "not allowed in a behavior tree (the tree's shape decides it)")
    fields = {k: v for k, v in node.items() if k not in _LEAF_FORBIDDEN}
    params = normalize_params(StepKind(kind), fields, path, out)
    if step_id is None:
        return None
    tree.checks.append((step_id, path, {k: v for k, v in fields.items() if k not in COMMON_FIELDS}))
    description = str(node.get("description", ""))
    params = _entry(params, when, guarded)
    step = StepDefinition(step_id, StepKind(kind), tuple(deps), params, description, path)
    return tree.add(step, path)


def _decorated(
    tree: _Tree, node: Mapping[str, Any], path: str, deps: list[str], when: str | None, guarded: bool
) -> str | None:
    """`retry` / `timeout` around a leaf (possibly through further decorators): folded into the leaf."""
    out = tree.out
    _reject_unknown(out, node, path, "decorator", [*DECORATORS, "do"])
    inner = node.get("do")
    if not isinstance(inner, Mapping):
        out.add(f"{path}.do", "a decorator needs `do`: the leaf step it wraps")
        return None
    if any(key in inner for key in (*COMPOSITES, "condition")):
        out.add(f"{path}.do", "retry and timeout decorators wrap a leaf step, not a composite or a condition")
        return None
    leaf = dict(inner)
    if any(key in leaf for key in DECORATORS):  # nested decorator: merge outwards in
        nested = {k: v for k, v in leaf.items() if k in DECORATORS}
        leaf = dict(leaf.get("do") or {}) if isinstance(leaf.get("do"), Mapping) else {}
        leaf.update({("timeout_seconds" if k == "timeout" else k): v for k, v in nested.items()})
    for key, target in (("retry", "retry"), ("timeout", "timeout_seconds")):
        if key in node:
            if target in leaf:
                out.add(f"{path}.{key}", f"the wrapped step sets `{target}` too; give it once")
            leaf[target] = node[key]
    return _leaf(tree, leaf, f"{path}.do", deps, when, guarded)


def _condition(
    tree: _Tree,
    node: Mapping[str, Any],
    path: str,
    position: str,
    deps: list[str],
    when: str | None,
    guarded: bool,
) -> str | None:
    out = tree.out
    _reject_unknown(out, node, path, "condition", ["condition", "id", "description"])
    step_id = _node_id(tree, node, path, f"condition@{position}")
    expression = node["condition"]
    if not (isinstance(expression, bool) or (isinstance(expression, str) and expression.strip())):
        out.add(f"{path}.condition", "must be a boolean or a template such as '{{ steps.a.output.ok }}'")
        return None
    if step_id is None:
        return None
    tree.checks.append((step_id, f"{path}.condition", expression))
    params = {"value": True, "require": expression, "message": "the condition is false"}
    step = StepDefinition(step_id, StepKind.VALUE, tuple(deps), _entry(params, when, guarded), "")
    return tree.add(step, path)


def _composite(
    tree: _Tree,
    node: Mapping[str, Any],
    path: str,
    position: str,
    deps: list[str],
    when: str | None,
    guarded: bool,
) -> str | None:
    out = tree.out
    kinds = [k for k in COMPOSITES if k in node]
    kind = kinds[0]
    if len(kinds) > 1:
        out.add(path, f"a node is one of {', '.join(COMPOSITES)}; this one has {', '.join(kinds)}")
    allowed = {kind, "id", "description"} | ({"success"} if kind == "parallel" else set())
    _reject_unknown(out, node, path, kind, sorted(allowed))
    step_id = _node_id(tree, node, path, f"{kind}@{position}")
    children = node[kind]
    if not isinstance(children, list) or not children:
        out.add(f"{path}.{kind}", "must be a non-empty list of nodes")
        return None
    success = node.get("success", "all")
    if kind == "parallel" and success not in _PARALLEL_SUCCESS:
        out.add(f"{path}.success", f"must be one of {', '.join(_PARALLEL_SUCCESS)}")
    results: list[str | None] = []
    child_guarded = guarded or kind == "selector" or (kind == "parallel" and success == "one")
    previous, entry = deps, when
    for i, child in enumerate(children):
        where, pos = f"{path}.{kind}[{i}]", f"{i}" if position == "root" else f"{position}.{i}"
        if kind == "parallel":
            result = _node(tree, child, where, pos, deps, when, child_guarded)
        else:
            result = _node(tree, child, where, pos, previous, entry, child_guarded)
            if result is not None:
                previous = [result]
                entry = _ok(result) if kind == "sequence" else _failed(result)
        results.append(result)
    if step_id is None or any(r is None for r in results):
        return None
    done = [r for r in results if r is not None]
    if kind == "sequence":
        require = _ok(done[-1])
    elif kind == "parallel" and success == "all":
        require = " and ".join(f"({_ok(r)})" for r in done)
    else:
        require = " or ".join(f"({_ok(r)})" for r in done)
    params: dict[str, Any] = {
        "value": True,
        "require": "{{ " + require + " }}",
        "message": f"the {kind} failed",
        "join": "any",
    }
    if guarded:
        params["on_error"] = "continue"
    return tree.add(StepDefinition(step_id, StepKind.VALUE, tuple(sorted(set(done))), params, ""), path)


def _node(
    tree: _Tree, node: Any, path: str, position: str, deps: list[str], when: str | None, guarded: bool
) -> str | None:
    if not isinstance(node, Mapping):
        tree.out.add(path, "must be an object: a composite, a condition, a decorator or a leaf step")
        return None
    if any(key in node for key in COMPOSITES):
        return _composite(tree, node, path, position, deps, when, guarded)
    if "condition" in node:
        return _condition(tree, node, path, position, deps, when, guarded)
    if any(key in node for key in DECORATORS):
        return _decorated(tree, node, path, deps, when, guarded)
    return _leaf(tree, node, path, deps, when, guarded)


def compile_tree(
    data: Mapping[str, Any], kind: str, out: Violations, input_fields: set[str] | None
) -> tuple[list[StepDefinition], dict[str, Any]]:
    """Validates a bt definition (every problem into `out`) and compiles it into plan steps."""
    tree = _Tree(out)
    if "root" not in data:
        out.add("root", "is required: the tree's root node")
    else:
        _node(tree, data["root"], "root", "root", [], None, False)
    known = set(tree.ids)
    needs = {step.id: step.needs for step in tree.steps}
    for step_id, path, value in tree.checks:
        upstream = graph.ancestors(step_id, needs)
        check_templates(
            value,
            path,
            out,
            known_steps=known,
            upstream=upstream,
            input_fields=input_fields,
            upstream_hint="a tree node reads only the steps that run before it",
        )
    if not tree.steps and "root" in data and not out:
        out.add("root", "the tree has no steps")
    return tree.steps, {"known_steps": known}
