"""The syntax of `{{ expr }}` templates: the tree (`Node`), a tokenizer and a recursive-descent parser.

No `eval`: text becomes a tree of `Expression`, `Compare`, `Logic`, `Not` and `ListLiteral` nodes, which
`agentflow_runtime.templates` evaluates, analyses and rewrites. The grammar is in that module's docstring.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

__all__ = [
    "CLOSE",
    "FILTER_ARITY",
    "OPEN",
    "Compare",
    "Expression",
    "Filter",
    "ListLiteral",
    "Logic",
    "Node",
    "Not",
    "PathPart",
    "Template",
    "TemplateError",
    "is_template",
    "leaves",
    "parse_expression",
    "parse_template",
    "whole_expression",
]

OPEN: Final = "{{"
CLOSE: Final = "}}"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    |(?P<name>[A-Za-z_][A-Za-z0-9_-]*)
    |(?P<op>==|!=|<=|>=|[<>.\[\](),|])""",
    re.VERBOSE,
)
FILTER_ARITY: Final[dict[str, int]] = {"json": 0, "default": 1, "upper": 0, "lower": 0, "length": 0}
"""The filters a template may name, with how many arguments each takes (evaluated by `templates`)."""
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


def leaves(node: Node) -> Iterator[Expression]:
    """The `Expression`s of a node, depth first, left to right."""
    if isinstance(node, Expression):
        yield node
        if node.inner is not None:
            yield from leaves(node.inner)
    elif isinstance(node, Compare | Logic):
        yield from leaves(node.left)
        yield from leaves(node.right)
    elif isinstance(node, Not):
        yield from leaves(node.operand)
    else:
        for item in node.items:
            yield from leaves(item)


@dataclass(frozen=True)
class Template:
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
        arity = FILTER_ARITY.get(name)
        if arity is None:
            raise self.error(f"unknown filter {name!r} (known: {', '.join(sorted(FILTER_ARITY))})", start)
        if len(args) != arity:
            raise self.error(f"filter {name!r} takes {arity} argument(s), got {len(args)}", start)
        return Filter(name, tuple(args))


def _decode_literal(token: str) -> Any:
    if token[0] == "'":
        token = '"' + token[1:-1].replace("\\'", "'").replace('"', '\\"') + '"'
    return json.loads(token)


@lru_cache(maxsize=4096)
def parse_template(text: str) -> Template:
    chunks: list[str | Node] = []
    pos = 0
    while True:
        start = text.find(OPEN, pos)
        if start < 0:
            if pos < len(text):
                chunks.append(text[pos:])
            return Template(tuple(chunks))
        end = text.find(CLOSE, start + len(OPEN))
        if end < 0:
            raise TemplateError("unclosed '{{'", position=start)
        if start > pos:
            chunks.append(text[pos:start])
        body_start = start + len(OPEN)
        chunks.append(_Parser(text[body_start:end], body_start).expression())
        pos = end + len(CLOSE)


def parse_expression(text: str) -> Node:
    """Parses the body of one `{{ ... }}` (without the braces); raises `TemplateError` on a syntax error."""
    return _Parser(text, 0).expression()


def whole_expression(text: str) -> Node | None:
    """The expression when `text` is exactly one `{{ expr }}` (outer whitespace allowed), else None; raises
    `TemplateError` on a syntax error."""
    return parse_template(text).whole if OPEN in text else None


def is_template(text: str) -> bool:
    """True when the string contains a `{{`."""
    return OPEN in text
