"""Static checks of the `{{ ... }}` templates in a definition: syntax and what they may refer to.

A template may read `input.<field>` (a declared field, when the input schema lists properties) and
`steps.<id>...` of a step that runs before it: for a step, one of its transitive `needs`; for the workflow
output, any step. In an fsm, `states.<name>...` (the latest visit of a declared state) replaces `steps`.
Each problem is reported at the path of the field holding the template, naming the expression.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set
from typing import Any

from agentflow_runtime import templates

from .violations import Violations

__all__ = ["ROOTS", "check_templates"]

ROOTS = ("input", "steps")
FSM_ROOTS = ("input", "states")


def _leaves(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")


def check_templates(
    value: Any,
    path: str,
    out: Violations,
    *,
    known_steps: Set[str] = frozenset(),
    upstream: Set[str] | None,
    input_fields: Set[str] | None,
    known_states: Set[str] | None = None,
    upstream_hint: str = "add it to `needs`",
) -> None:
    """Reports every template problem in `value` at its own field path.

    `upstream` is the set of steps the templates may read (None: every known step); `input_fields` the
    declared input fields (None: any); `known_states`, when given, makes the roots `input` and `states`.
    """
    roots = ROOTS if known_states is None else FSM_ROOTS
    for field, text in _leaves(value, path):
        try:
            found = templates.expressions(text)
        except templates.TemplateError as exc:
            out.add(field, f"template syntax error: {exc}")
            continue
        for expr in found:
            root = expr.root
            if root is None:
                continue
            if root not in roots:
                out.add(
                    field, f"template {expr.path!r}: unknown root {root!r} (use one of {', '.join(roots)})"
                )
            elif len(expr.parts) < 2 or not isinstance(expr.parts[1], str):
                if root == "steps":
                    out.add(field, f"template {expr.path!r}: name a step, e.g. steps.<id>.output")
                elif root == "states":
                    out.add(field, f"template {expr.path!r}: name a state, e.g. states.<name>.output")
            elif root == "states":
                if known_states is not None and expr.parts[1] not in known_states:
                    out.add(field, f"template {expr.path!r}: unknown state {expr.parts[1]!r}")
            elif root == "steps":
                step = expr.parts[1]
                if step not in known_steps:
                    out.add(field, f"template {expr.path!r}: unknown step {step!r}")
                elif upstream is not None and step not in upstream:
                    out.add(field, f"template {expr.path!r}: step {step!r} is not upstream; {upstream_hint}")
            elif input_fields is not None and expr.parts[1] not in input_fields:
                out.add(field, f"template {expr.path!r}: input field {expr.parts[1]!r} is not declared")
