"""Safe `{{ expr }}` templates shared by the planner (validation) and the worker (evaluation).

Nothing is ever `eval`-ed. An expression is a path with optional filters::

    {{ input.topic }}
    {{ steps.summarize.output.text }}
    {{ steps.fetch.output.items[0].title }}
    {{ steps["word-count"].output.words | default(0) }}
    {{ input.tags | json }}

Grammar (whitespace between tokens is ignored)::

    expr    := primary ( "|" filter )*
    primary := path | literal
    path    := name ( "." name | "[" integer "]" | "[" string "]" )*
    filter  := name [ "(" literal ( "," literal )* ")" ]
    name    := [A-Za-z_][A-Za-z0-9_-]*
    literal := string ('..' or "..", JSON escapes) | number | true | false | null

Filters: `json` (compact JSON text), `default(x)` (x when the value is missing or null),
`upper`, `lower` (strings), `length` (strings, lists, objects).

Rendering (`render`) walks dicts and lists recursively. A string that is exactly one `{{ expr }}` (surrounding
whitespace allowed) evaluates to the raw value and keeps its type; any other string interpolates each
expression: strings as they are, everything else as compact JSON. A path that does not resolve is a
`TemplateError` naming the path, unless a `default` filter supplies a value.

`references` returns the step ids a value mentions through `steps.<id>`; `expressions` returns every parsed
expression, for validation of other roots (e.g. `input.<field>`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

__all__ = [
    "Expression",
    "TemplateError",
    "expressions",
    "is_template",
    "literal_text",
    "references",
    "render",
]

_OPEN: Final = "{{"
_CLOSE: Final = "}}"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


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
    """A parsed `{{ ... }}`: either a path (`parts`) or a literal, then filters."""

    parts: tuple[PathPart, ...]
    literal: Any
    filters: tuple[Filter, ...]
    source: str

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
class _Template:
    """A string split into literal text and expressions."""

    chunks: tuple[str | Expression, ...]

    @property
    def whole(self) -> Expression | None:
        """The expression when the string is exactly one `{{ expr }}` (ignoring outer whitespace)."""
        exprs = [c for c in self.chunks if isinstance(c, Expression)]
        texts = [c for c in self.chunks if isinstance(c, str)]
        if len(exprs) == 1 and all(not t.strip() for t in texts):
            return exprs[0]
        return None


# --------------------------------------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, text: str, offset: int) -> None:
        self.text = text
        self.pos = 0
        self.offset = offset

    def error(self, message: str) -> TemplateError:
        return TemplateError(message, position=self.offset + self.pos)

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            found = repr(self.text[self.pos]) if self.pos < len(self.text) else "end of expression"
            raise self.error(f"expected {char!r}, found {found}")
        self.pos += 1

    def name(self) -> str:
        self.skip()
        match = _NAME.match(self.text, self.pos)
        if not match:
            raise self.error("expected a name")
        self.pos = match.end()
        return match.group()

    def literal(self) -> Any:
        self.skip()
        for pattern in (_STRING, _NUMBER):
            match = pattern.match(self.text, self.pos)
            if match:
                self.pos = match.end()
                return _decode_literal(match.group())
        match = _NAME.match(self.text, self.pos)
        if match and match.group() in ("true", "false", "null"):
            self.pos = match.end()
            return {"true": True, "false": False, "null": None}[match.group()]
        raise self.error("expected a literal (string, number, true, false or null)")

    def expression(self) -> Expression:
        parts: list[PathPart] = []
        literal: Any = None
        head = self.peek()
        if not head:
            raise self.error("empty expression")
        if head in "'\"-" or head.isdigit():
            literal = self.literal()
        else:
            match = _NAME.match(self.text, self.pos)
            if match and match.group() in ("true", "false", "null"):
                literal = self.literal()
            else:
                parts = self.path()
        filters: list[Filter] = []
        while self.peek() == "|":
            self.pos += 1
            filters.append(self.filter())
        if self.peek():
            raise self.error(f"unexpected {self.text[self.pos]!r}")
        return Expression(tuple(parts), literal, tuple(filters), self.text.strip())

    def path(self) -> list[PathPart]:
        parts: list[PathPart] = [self.name()]
        while True:
            char = self.peek()
            if char == ".":
                self.pos += 1
                parts.append(self.name())
            elif char == "[":
                self.pos += 1
                self.skip()
                start = self.pos
                key = self.literal()
                if isinstance(key, bool) or not isinstance(key, int | str):
                    self.pos = start
                    raise self.error("an index must be an integer or a string")
                parts.append(key)
                self.expect("]")
            else:
                return parts

    def filter(self) -> Filter:
        self.skip()
        start = self.pos
        name = self.name()
        args: list[Any] = []
        if self.peek() == "(":
            self.pos += 1
            if self.peek() != ")":
                args.append(self.literal())
                while self.peek() == ",":
                    self.pos += 1
                    args.append(self.literal())
            self.expect(")")
        spec = _FILTERS.get(name)
        if spec is None:
            self.pos = start
            raise self.error(f"unknown filter {name!r} (known: {', '.join(sorted(_FILTERS))})")
        if len(args) != spec[0]:
            self.pos = start
            raise self.error(f"filter {name!r} takes {spec[0]} argument(s), got {len(args)}")
        return Filter(name, tuple(args))


def _decode_literal(token: str) -> Any:
    if token[0] == "'":
        token = '"' + token[1:-1].replace("\\'", "'").replace('"', '\\"') + '"'
    return json.loads(token)


@lru_cache(maxsize=4096)
def _parse(text: str) -> _Template:
    chunks: list[str | Expression] = []
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
    value: Any = _resolve(expr.parts, scope) if expr.parts else expr.literal
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


def _render_string(text: str, scope: Mapping[str, Any]) -> Any:
    if _OPEN not in text:
        return text
    template = _parse(text)
    whole = template.whole
    if whole is not None:
        return _evaluate(whole, scope)
    return "".join(
        chunk if isinstance(chunk, str) else _to_text(_evaluate(chunk, scope)) for chunk in template.chunks
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
            found.extend(c for c in _parse(text).chunks if isinstance(c, Expression))
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
