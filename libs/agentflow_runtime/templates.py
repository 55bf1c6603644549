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
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

__all__ = [
    "Compare",
    "Expression",
    "ListLiteral",
    "Logic",
    "Node",
    "Not",
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

_OPEN: Final = "{{"
_CLOSE: Final = "}}"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    |(?P<name>[A-Za-z_][A-Za-z0-9_-]*)
    |(?P<op>==|!=|<=|>=|[<>.\[\](),|])""",
    re.VERBOSE,
)
_KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_CONSTANTS: Final[dict[str, Any]] = {"true": True, "false": False, "null": None}
_COMPARISONS: Final = frozenset({"==", "!=", "<", "<=", ">", ">="})


class TemplateError(ValueError):
    """A template that cannot be parsed or evaluated.

    `position` is the 0-based character offset in the template text (for syntax errors), `path` the
    expression path that failed to resolve (for evaluation errors).
    """

    def __init__(self, message: str, *, position: int | None = None, path: str | None = None) -> None:
        detail = f"{message} (at character {position})" if position is not None else message
        super().__init__(detail)
        self.message = message
        self.position = position
        self.path = path


class _Missing:
    """Marks a path that did not resolve while filters still run."""

    __slots__ = ()


_MISSING: Final = _Missing()
PathPart = str | int


@dataclass(frozen=True)
class Filter:
    """One `| name(args)` applied to a value."""

    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Expression:
    """A path (`parts`), a literal, or a parenthesised expression or list (`inner`), then filters.

    A whole `{{ ... }}` is a `Node`: an `Expression`, or a `Compare`, `Logic`, `Not` or `ListLiteral` whose
    leaves are `Expression`s.
    """

    parts: tuple[PathPart, ...]
    literal: Any
    filters: tuple[Filter, ...]
    source: str
    inner: Node | None = None

    @property
    def root(self) -> str | None:
        """The first path segment (`input`, `steps`, ...), or None for a literal."""
        return str(self.parts[0]) if self.parts else None

    @property
    def path(self) -> str:
        """The path as text, e.g. `steps.fetch.output.items[0]`."""
        out = ""
        for part in self.parts:
            if isinstance(part, int):
                out += f"[{part}]"
            elif _NAME.fullmatch(part):
                out += f".{part}" if out else part
            else:
                out += f"[{json.dumps(part)}]"
        return out

    @property
    def has_default(self) -> bool:
        return any(f.name == "default" for f in self.filters)


@dataclass(frozen=True)
class Compare:
    """`left op right`; `op` is one of == != < <= > >= in, or `not in`."""

    op: str
    left: Node
    right: Node
    source: str


@dataclass(frozen=True)
class Logic:
    """`left and right` or `left or right` (short-circuit, boolean result)."""

    op: str
    left: Node
    right: Node
    source: str


@dataclass(frozen=True)
class Not:
    """`not operand`."""

    operand: Node
    source: str


@dataclass(frozen=True)
class ListLiteral:
    """`[a, b, ...]`; items are expressions."""

    items: tuple[Node, ...]
    source: str


Node = Expression | Compare | Logic | Not | ListLiteral


def _leaves(node: Node) -> Iterator[Expression]:
    """The `Expression`s of a node, depth first, left to right."""
    if isinstance(node, Expression):
        yield node
        if node.inner is not None:
            yield from _leaves(node.inner)
    elif isinstance(node, Compare | Logic):
        yield from _leaves(node.left)
        yield from _leaves(node.right)
    elif isinstance(node, Not):
        yield from _leaves(node.operand)
    else:
        for item in node.items:
            yield from _leaves(item)


@dataclass(frozen=True)
class _Template:
    """A string split into literal text and expressions."""

    chunks: tuple[str | Node, ...]

    @property
    def whole(self) -> Node | None:
        """The expression when the string is exactly one `{{ expr }}` (ignoring outer whitespace)."""
        exprs = [c for c in self.chunks if not isinstance(c, str)]
        texts = [c for c in self.chunks if isinstance(c, str)]
        if len(exprs) == 1 and all(not t.strip() for t in texts):
            return exprs[0]
        return None


# --------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Token:
    kind: str  # string | number | name | op | end
    text: str
    start: int  # offset in the expression text
    end: int


def _tokenize(text: str, offset: int) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise TemplateError(f"unexpected character {text[pos]!r}", position=offset + pos)
        kind = str(match.lastgroup)
        if kind != "ws":
            tokens.append(_Token(kind, match.group(), pos, match.end()))
        pos = match.end()
    tokens.append(_Token("end", "", len(text), len(text)))
    return tokens


class _Parser:
    """Recursive descent over the tokens of one `{{ ... }}` body (see the grammar in the module doc)."""

    def __init__(self, text: str, offset: int) -> None:
        self.text = text
        self.offset = offset
        self.tokens = _tokenize(text, offset)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def error(self, message: str, token: _Token | None = None) -> TemplateError:
        return TemplateError(message, position=self.offset + (token or self.peek()).start)

    def at(self, kind: str, text: str | None = None) -> bool:
        token = self.peek()
        return token.kind == kind and (text is None or token.text == text)

    def expect(self, text: str) -> None:
        if not self.at("op", text):
            token = self.peek()
            found = repr(token.text) if token.kind != "end" else "end of expression"
            raise self.error(f"expected {text!r}, found {found}")
        self.take()

    def source(self, first: int) -> str:
        return self.text[self.tokens[first].start : self.tokens[self.i - 1].end]

    def expression(self) -> Node:
        if self.at("end"):
            raise self.error("empty expression")
        node = self.or_()
        if not self.at("end"):
            raise self.error(f"unexpected {self.peek().text!r}")
        return node

    def or_(self) -> Node:
        first = self.i
        node = self.and_()
        while self.at("name", "or"):
            self.take()
            node = Logic("or", node, self.and_(), self.source(first))
        return node

    def and_(self) -> Node:
        first = self.i
        node = self.not_()
        while self.at("name", "and"):
            self.take()
            node = Logic("and", node, self.not_(), self.source(first))
        return node

    def not_(self) -> Node:
        first = self.i
        if self.at("name", "not"):
            self.take()
            operand = self.not_()
            return Not(operand, self.source(first))
        return self.compare()

    def compare(self) -> Node:
        first = self.i
        left = self.unary()
        token = self.peek()
        if (token.kind == "op" and token.text in _COMPARISONS) or self.at("name", "in"):
            op = self.take().text
        elif self.at("name", "not") and self.tokens[self.i + 1].text == "in":
            self.i += 2
            op = "not in"
        else:
            return left
        right = self.unary()
        return Compare(op, left, right, self.source(first))

    def unary(self) -> Node:
        first = self.i
        token = self.peek()
        parts: list[PathPart] = []
        literal: Any = None
        inner: Node | None = None
        if token.kind in ("string", "number") or (token.kind == "name" and token.text in _CONSTANTS):
            literal = self.literal()
        elif token.kind == "name" and token.text not in _KEYWORDS:
            parts = self.path()
        elif self.at("op", "("):
            self.take()
            inner = self.or_()
            self.expect(")")
        elif self.at("op", "["):
            self.take()
            items: list[Node] = []
            if not self.at("op", "]"):
                items.append(self.or_())
                while self.at("op", ","):
                    self.take()
                    items.append(self.or_())
            self.expect("]")
            inner = ListLiteral(tuple(items), self.source(first))
        elif token.kind == "end":
            raise self.error("expected a value, found end of expression")
        else:
            raise self.error(f"expected a value (a path, a literal, a list or '('), found {token.text!r}")
        filters: list[Filter] = []
        while self.at("op", "|"):
            self.take()
            filters.append(self.filter())
        if inner is not None and not filters:
            return inner
        return Expression(tuple(parts), literal, tuple(filters), self.source(first), inner)

    def name(self) -> str:
        token = self.peek()
        if token.kind != "name":
            raise self.error("expected a name")
        return self.take().text

    def literal(self) -> Any:
        token = self.peek()
        if token.kind in ("string", "number"):
            self.take()
            return _decode_literal(token.text)
        if token.kind == "name" and token.text in _CONSTANTS:
            self.take()
            return _CONSTANTS[token.text]
        raise self.error("expected a literal (string, number, true, false or null)")

    def path(self) -> list[PathPart]:
        parts: list[PathPart] = [self.name()]
        while True:
            if self.at("op", "."):
                self.take()
                parts.append(self.name())
            elif self.at("op", "["):
                self.take()
                start = self.peek()
                key = self.literal()
                if isinstance(key, bool) or not isinstance(key, int | str):
                    raise self.error("an index must be an integer or a string", start)
                parts.append(key)
                self.expect("]")
            else:
                return parts

    def filter(self) -> Filter:
        start = self.peek()
        name = self.name()
        args: list[Any] = []
        if self.at("op", "("):
            self.take()
            if not self.at("op", ")"):
                args.append(self.literal())
                while self.at("op", ","):
                    self.take()
                    args.append(self.literal())
            self.expect(")")
        spec = _FILTERS.get(name)
        if spec is None:
            raise self.error(f"unknown filter {name!r} (known: {', '.join(sorted(_FILTERS))})", start)
        if len(args) != spec[0]:
            raise self.error(f"filter {name!r} takes {spec[0]} argument(s), got {len(args)}", start)
        return Filter(name, tuple(args))


def _decode_literal(token: str) -> Any:
    if token[0] == "'":
        token = '"' + token[1:-1].replace("\\'", "'").replace('"', '\\"') + '"'
    return json.loads(token)


@lru_cache(maxsize=4096)
def _parse(text: str) -> _Template:
    chunks: list[str | Node] = []
    pos = 0
    while True:
        start = text.find(_OPEN, pos)
        if start < 0:
            if pos < len(text):
                chunks.append(text[pos:])
            return _Template(tuple(chunks))
        end = text.find(_CLOSE, start + len(_OPEN))
        if end < 0:
            raise TemplateError("unclosed '{{'", position=start)
        if start > pos:
            chunks.append(text[pos:start])
        body_start = start + len(_OPEN)
        chunks.append(_Parser(text[body_start:end], body_start).expression())
        pos = end + len(_CLOSE)


def parse_expression(text: str) -> Node:
    """Parses the body of one `{{ ... }}` (without the braces); raises `TemplateError` on a syntax error."""
    return _Parser(text, 0).expression()


def whole_expression(text: str) -> Node | None:
    """The expression when `text` is exactly one `{{ expr }}` (outer whitespace allowed), else None; raises
    `TemplateError` on a syntax error."""
    return _parse(text).whole if _OPEN in text else None


def is_template(text: str) -> bool:
    """True when the string contains a `{{`."""
    return _OPEN in text


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


_FILTERS: Final[dict[str, tuple[int, Callable[..., Any]]]] = {
    "json": (0, _json),
    "default": (1, _default),
    "upper": (0, _string_filter("upper", str.upper)),
    "lower": (0, _string_filter("lower", str.lower)),
    "length": (0, _length),
}


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
            value = _FILTERS[flt.name][1](value, *flt.args)
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
    if _OPEN not in text:
        return text
    template = _parse(text)
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
        if _OPEN in text:
            for chunk in _parse(text).chunks:
                if not isinstance(chunk, str):
                    found.extend(_leaves(chunk))
    return found


def literal_text(value: Any) -> str:
    """The fixed text of `value`'s strings (recursively), every `{{ ... }}` left out, joined by newlines."""
    pieces: list[str] = []
    for text in _strings(value):
        if _OPEN in text:
            pieces.extend(c for c in _parse(text).chunks if isinstance(c, str))
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
        if _OPEN not in value:
            return value
        return "".join(
            chunk if isinstance(chunk, str) else "{{ " + to_text(_rewrite_node(chunk, fn)) + " }}"
            for chunk in _parse(value).chunks
        )
    if isinstance(value, Mapping):
        return {key: rewrite_paths(item, fn) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rewrite_paths(item, fn) for item in value]
    return value
