"""Static checks of the `{{ ... }}` templates in a definition: syntax and what they may refer to.

A template may read `input.<field>` (a declared field, when the input schema lists properties) and
`steps.<id>...` of a step that runs before it: for a step, one of its transitive `needs`; for the workflow
output, any step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set
from typing import Any

from agentflow_runtime import templates

from .violations import Violations

__all__ = ["ROOTS", "check_templates"]

ROOTS = ("input", "steps")


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
    known_steps: Set[str],
    upstream: Set[str] | None,
    input_fields: Set[str] | None,
) -> None:
    """Reports every template problem in `value` at its own field path.

    `upstream` is the set of steps the templates may read (None: every known step); `input_fields` the
    declared input fields (None: any).
    """
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
            if root not in ROOTS:
                out.add(
                    field, f"template {expr.path!r}: unknown root {root!r} (use one of {', '.join(ROOTS)})"
                )
            elif len(expr.parts) < 2 or not isinstance(expr.parts[1], str):
                if root == "steps":
                    out.add(field, f"template {expr.path!r}: name a step, e.g. steps.<id>.output")
            elif root == "steps":
                step = expr.parts[1]
                if step not in known_steps:
                    out.add(field, f"template {expr.path!r}: unknown step {step!r}")
                elif upstream is not None and step not in upstream:
                    out.add(
                        field, f"template {expr.path!r}: step {step!r} is not upstream; add it to `needs`"
                    )
            elif input_fields is not None and expr.parts[1] not in input_fields:
                out.add(field, f"template {expr.path!r}: input field {expr.parts[1]!r} is not declared")
