"""Safe `{{ expr }}` templates shared by the planner (validation) and the worker (evaluation).

Nothing is ever `eval`-ed: a small tokenizer and a recursive-descent parser build a tree that is walked
against the scope. An expression is a path with optional filters, or a combination of them::

    {{ input.topic }}
    {{ steps.summarize.output.text }}
    {{ steps.fetch.output.items[0].title }}
    {{ steps["word-count"].output.words | default(0) }}
    {{ input.tags | json }}
    {{ steps.score.output.value >= 0.8 and not input.draft }}
    {{ input.lang in ['en', 'fr'] or (steps.check.status == "FAILED") }}

Grammar (whitespace between tokens is ignored; keywords are `and or not in true false null`)::

    expr    := or
    or      := and ( "or" and )*
    and     := not ( "and" not )*
    not     := "not" not | compare
    compare := unary [ ( "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in" ) unary ]
    unary   := primary ( "|" filter )*
    primary := path | literal | "[" [ expr ( "," expr )* ] "]" | "(" expr ")"
    path    := name ( "." name | "[" integer "]" | "[" string "]" )*
    filter  := name [ "(" literal ( "," literal )* ")" ]
    name    := [A-Za-z_][A-Za-z0-9_-]*
    literal := string ('..' or "..", JSON escapes) | number | true | false | null

Filters: `json` (compact JSON text), `default(x)` (x when the value is missing or null),
`upper`, `lower` (strings), `length` (strings, lists, objects).

Operators: `==` and `!=` compare JSON values (a boolean never equals a number); `<`, `<=`, `>`, `>=` compare
two numbers or two strings (anything else is an error); `x in y` tests membership in a list, a substring of a
string, or a key of an object. `and`, `or` and `not` give booleans and short-circuit (the right side of
`a and b` is not evaluated when `a` is false); truthiness is JSON's: null, false, 0, "", [] and {} are false.

Rendering (`render`) walks dicts and lists recursively. A string that is exactly one `{{ expr }}` (surrounding
whitespace allowed) evaluates to the raw value and keeps its type; any other string interpolates each
expression: strings as they are, everything else as compact JSON. A path that does not resolve is a
`TemplateError` naming the path, unless a `default` filter supplies a value.

`references` returns the step ids a value mentions through `steps.<id>`; `expressions` returns every path or
literal (with its filters) of every expression, for validation of other roots (e.g. `input.<field>`);
`rewrite_paths` rewrites the paths of every expression (used to inline one workflow into another).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

from agentflow_runtime.template_syntax import (
    OPEN,
    Compare,
    Expression,
    Filter,
    ListLiteral,
    Logic,
    Node,
    Not,
    PathPart,
    TemplateError,
    is_template,
    leaves,
    parse_expression,
    parse_template,
    whole_expression,
)

__all__ = [
    "Compare",
    "Expression",
    "Filter",
    "ListLiteral",
    "Logic",
    "Node",
    "Not",
    "PathPart",
    "TemplateError",
    "expressions",
    "is_template",
    "literal_text",
    "parse_expression",
    "references",
    "render",
    "rewrite_paths",
    "to_text",
    "truthy",
    "whole_expression",
]


class _Missing:
    """Marks a path that did not resolve while filters still run."""

    __slots__ = ()


_MISSING: Final = _Missing()


# ------------------------------------------------------------------------------------------- evaluation


def _to_text(value: Any) -> str:
    return value if isinstance(value, str) else _json(value)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _default(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _string_filter(name: str, transform: Callable[[str], str]) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        if not isinstance(value, str):
            raise TemplateError(f"filter {name!r} expects a string, got {type(value).__name__}")
        return transform(value)

    return apply


def _length(value: Any) -> int:
    if isinstance(value, str | list | tuple | Mapping):
        return len(value)
    raise TemplateError(f"filter 'length' expects a string, list or object, got {type(value).__name__}")


_FILTERS: Final[dict[str, Callable[..., Any]]] = {
    "json": _json,
    "default": _default,
    "upper": _string_filter("upper", str.upper),
    "lower": _string_filter("lower", str.lower),
    "length": _length,
}
"""How each filter the parser accepts (`template_syntax.FILTER_ARITY`) is applied."""


def _step(current: Any, part: PathPart) -> Any:
    if isinstance(current, Mapping) and isinstance(part, str):
        return current.get(part, _MISSING)
    if isinstance(current, list | tuple) and isinstance(part, int) and -len(current) <= part < len(current):
        return current[part]
    return _MISSING


def _resolve(parts: Sequence[PathPart], scope: Mapping[str, Any]) -> Any:
    current: Any = scope
    for part in parts:
        current = _step(current, part)
        if current is _MISSING:
            break
    return current


def _evaluate(expr: Expression, scope: Mapping[str, Any]) -> Any:
    if expr.parts:
        value: Any = _resolve(expr.parts, scope)
    elif expr.inner is not None:
        value = _eval(expr.inner, scope)
    else:
        value = expr.literal
    for flt in expr.filters:
        if value is _MISSING:
            if flt.name == "default":
                value = flt.args[0]
            continue
        try:
            value = _FILTERS[flt.name](value, *flt.args)
        except TemplateError as exc:
            raise TemplateError(f"{{{{ {expr.source} }}}}: {exc.message}", path=expr.path) from None
    if value is _MISSING:
        raise TemplateError(f"{expr.path!r} is not defined", path=expr.path)
    return value


def truthy(value: Any) -> bool:
    """JSON truthiness: null, false, 0, "", [] and {} are false."""
    return bool(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) != isinstance(right, bool):
        return False
    return bool(left == right)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list | tuple) else "object"


def _contains(container: Any, item: Any, node: Compare) -> bool:
    if isinstance(container, list | tuple):
        return any(_equal(item, element) for element in container)
    if isinstance(container, str) and isinstance(item, str):
        return item in container
    if isinstance(container, Mapping) and isinstance(item, str):
        return item in container
    raise TemplateError(
        f"{{{{ {node.source} }}}}: cannot test a {_type_name(item)} in a {_type_name(container)}"
    )


_ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


def _compare(node: Compare, scope: Mapping[str, Any]) -> bool:
    left, right = _eval(node.left, scope), _eval(node.right, scope)
    if node.op == "==":
        return _equal(left, right)
    if node.op == "!=":
        return not _equal(left, right)
    if node.op == "in":
        return _contains(right, left, node)
    if node.op == "not in":
        return not _contains(right, left, node)
    same = (_is_number(left) and _is_number(right)) or (isinstance(left, str) and isinstance(right, str))
    if not same:
        raise TemplateError(
            f"{{{{ {node.source} }}}}: cannot order a {_type_name(left)} and a {_type_name(right)}"
        )
    return _ORDER[node.op](left, right)


def _eval(node: Node, scope: Mapping[str, Any]) -> Any:
    if isinstance(node, Expression):
        return _evaluate(node, scope)
    if isinstance(node, Compare):
        return _compare(node, scope)
    if isinstance(node, Logic):
        first = truthy(_eval(node.left, scope))
        if first is (node.op == "or"):
            return first
        return truthy(_eval(node.right, scope))
    if isinstance(node, Not):
        return not truthy(_eval(node.operand, scope))
    return [_eval(item, scope) for item in node.items]


def _render_string(text: str, scope: Mapping[str, Any]) -> Any:
    if OPEN not in text:
        return text
    template = parse_template(text)
    whole = template.whole
    if whole is not None:
        return _eval(whole, scope)
    return "".join(
        chunk if isinstance(chunk, str) else _to_text(_eval(chunk, scope)) for chunk in template.chunks
    )


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """Evaluates every template in `value` (recursively through dicts and lists) against `scope`.

    Non-string leaves are returned unchanged; dict keys are not templated.
    """
    if isinstance(value, str):
        return _render_string(value, scope)
    if isinstance(value, Mapping):
        return {key: render(item, scope) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render(item, scope) for item in value]
    return value


# ---------------------------------------------------------------------------------------------- analysis


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def expressions(value: Any) -> list[Expression]:
    """Every expression in `value` (recursively), in order; raises `TemplateError` on a syntax error."""
    found: list[Expression] = []
    for text in _strings(value):
        if OPEN in text:
            for chunk in parse_template(text).chunks:
                if not isinstance(chunk, str):
                    found.extend(leaves(chunk))
    return found


def literal_text(value: Any) -> str:
    """The fixed text of `value`'s strings (recursively), every `{{ ... }}` left out, joined by newlines."""
    pieces: list[str] = []
    for text in _strings(value):
        if OPEN in text:
            pieces.extend(c for c in parse_template(text).chunks if isinstance(c, str))
        else:
            pieces.append(text)
    return "\n".join(pieces)


def references(value: Any) -> set[str]:
    """The step ids `value` refers to through `steps.<id>` (or `steps["<id>"]`)."""
    return {
        str(expr.parts[1])
        for expr in expressions(value)
        if len(expr.parts) >= 2 and expr.parts[0] == "steps" and isinstance(expr.parts[1], str)
    }


# --------------------------------------------------------------------------------------------- rewriting


def _path_text(parts: Sequence[PathPart]) -> str:
    return Expression(tuple(parts), None, (), "").path


def _filter_text(flt: Filter) -> str:
    args = f"({', '.join(_json(arg) for arg in flt.args)})" if flt.args else ""
    return f" | {flt.name}{args}"


def to_text(node: Node) -> str:
    """The canonical source of a node (compound operands parenthesised); parses back to the same tree."""
    if isinstance(node, Expression):
        if node.parts:
            head = _path_text(node.parts)
        elif node.inner is not None:
            head = to_text(node.inner) if isinstance(node.inner, ListLiteral) else f"({to_text(node.inner)})"
        else:
            head = _json(node.literal)
        return head + "".join(_filter_text(f) for f in node.filters)
    if isinstance(node, Compare | Logic):
        return f"{_operand(node.left)} {node.op} {_operand(node.right)}"
    if isinstance(node, Not):
        return f"not {_operand(node.operand)}"
    return "[" + ", ".join(to_text(item) for item in node.items) + "]"


def _operand(node: Node) -> str:
    text = to_text(node)
    return f"({text})" if isinstance(node, Compare | Logic | Not) else text


def _rewrite_node(node: Node, fn: Callable[[tuple[PathPart, ...]], tuple[PathPart, ...]]) -> Node:
    if isinstance(node, Expression):
        inner = _rewrite_node(node.inner, fn) if node.inner is not None else None
        parts = fn(node.parts) if node.parts else node.parts
        return Expression(parts, node.literal, node.filters, node.source, inner)
    if isinstance(node, Compare):
        return Compare(node.op, _rewrite_node(node.left, fn), _rewrite_node(node.right, fn), node.source)
    if isinstance(node, Logic):
        return Logic(node.op, _rewrite_node(node.left, fn), _rewrite_node(node.right, fn), node.source)
    if isinstance(node, Not):
        return Not(_rewrite_node(node.operand, fn), node.source)
    return ListLiteral(tuple(_rewrite_node(item, fn) for item in node.items), node.source)


def rewrite_paths(value: Any, fn: Callable[[tuple[PathPart, ...]], tuple[PathPart, ...]]) -> Any:
    """`value` (recursively) with every expression path replaced by `fn(path)`; text outside `{{ }}` and
    non-string leaves are kept. Raises `TemplateError` on a syntax error."""
    if isinstance(value, str):
        if OPEN not in value:
            return value
        return "".join(
            chunk if isinstance(chunk, str) else "{{ " + to_text(_rewrite_node(chunk, fn)) + " }}"
            for chunk in parse_template(value).chunks
        )
    if isinstance(value, Mapping):
        return {key: rewrite_paths(item, fn) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rewrite_paths(item, fn) for item in value]
    return value
