"""Path templates of `google.api.http` rules, parsed and compiled to matchers.

Grammar (google/api/http.proto)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

A variable without `= Segments` stands for `*` (one segment). `**` matches the rest of the path and must
be the last segment. Matching runs on the raw (still percent-encoded) path; captured values are decoded
except for `%2F`, so a captured slash always separates segments (grpc-gateway's default unescaping mode).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import unquote

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'()+,;=@%-]+")
_ENCODED_SLASH = re.compile("%2f", re.IGNORECASE)


class TemplateError(ValueError):
    """A path template does not follow the grammar."""


@dataclass(frozen=True, slots=True)
class Variable:
    """One `{field.path=segments}` of a template."""

    field_path: tuple[str, ...]
    segments: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A parsed template: segments (literals, `*`, `**` or variables) and an optional custom verb."""

    source: str
    segments: tuple[str | Variable, ...]
    verb: str | None

    @property
    def variables(self) -> tuple[Variable, ...]:
        return tuple(s for s in self.segments if isinstance(s, Variable))

    @property
    def literal_count(self) -> int:
        """Literal segments, inside variables too: more literals means a more specific template."""
        return sum(1 for s in self.flat_segments() if s not in ("*", "**"))

    def flat_segments(self) -> tuple[str, ...]:
        out: list[str] = []
        for segment in self.segments:
            out.extend(segment.segments if isinstance(segment, Variable) else (segment,))
        return tuple(out)

    def compile(self) -> re.Pattern[str]:
        """A regex over the raw path with one group per variable, in order."""
        parts: list[str] = []
        for segment in self.segments:
            if isinstance(segment, Variable):
                parts.append("(" + "/".join(_segment_regex(s) for s in segment.segments) + ")")
            else:
                parts.append(_segment_regex(segment))
        verb = ":" + re.escape(self.verb) if self.verb is not None else ""
        return re.compile("/" + "/".join(parts) + verb)


def _segment_regex(segment: str) -> str:
    if segment == "*":
        return "[^/]+"
    if segment == "**":
        return ".+"
    return re.escape(segment)


def decode_value(raw: str) -> str:
    """Percent-decodes a captured value, keeping `%2F` so segments stay unambiguous."""
    if "%" not in raw:
        return raw
    return "%2F".join(unquote(part) for part in _ENCODED_SLASH.split(raw))


def parse(template: str) -> PathTemplate:
    """Parses a template, raising `TemplateError` with the position of the first problem."""
    parser = _Parser(template)
    return parser.template()


class _Parser:
    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0

    def template(self) -> PathTemplate:
        self._expect("/")
        segments = self._segments(in_variable=False)
        verb: str | None = None
        if self._peek() == ":":
            self._pos += 1
            verb = self._literal()
        if self._pos != len(self._text):
            self._fail("unexpected character")
        flat: list[str] = []
        names: set[tuple[str, ...]] = set()
        for segment in segments:
            if isinstance(segment, Variable):
                if segment.field_path in names:
                    self._fail(f"variable {'.'.join(segment.field_path)} bound twice")
                names.add(segment.field_path)
                flat.extend(segment.segments)
            else:
                flat.append(segment)
        if "**" in flat[:-1]:
            self._fail("'**' must be the last segment")
        return PathTemplate(self._text, tuple(segments), verb)

    def _segments(self, *, in_variable: bool) -> list[str | Variable]:
        out: list[str | Variable] = [self._segment(in_variable=in_variable)]
        while self._peek() == "/":
            self._pos += 1
            out.append(self._segment(in_variable=in_variable))
        return out

    def _segment(self, *, in_variable: bool) -> str | Variable:
        if self._text.startswith("**", self._pos):
            self._pos += 2
            return "**"
        char = self._peek()
        if char == "*":
            self._pos += 1
            return "*"
        if char == "{":
            if in_variable:
                self._fail("variables cannot nest")
            return self._variable()
        return self._literal()

    def _variable(self) -> Variable:
        self._expect("{")
        path = [self._ident()]
        while self._peek() == ".":
            self._pos += 1
            path.append(self._ident())
        segments: tuple[str, ...] = ("*",)
        if self._peek() == "=":
            self._pos += 1
            inner = self._segments(in_variable=True)
            segments = tuple(s for s in inner if isinstance(s, str))
        self._expect("}")
        return Variable(tuple(path), segments)

    def _ident(self) -> str:
        match = _IDENT.match(self._text, self._pos)
        if match is None:
            self._fail("expected a field name")
        self._pos = match.end()
        return match.group()

    def _literal(self) -> str:
        match = _LITERAL.match(self._text, self._pos)
        if match is None:
            self._fail("expected a literal segment")
        self._pos = match.end()
        return match.group()

    def _peek(self) -> str:
        return self._text[self._pos] if self._pos < len(self._text) else ""

    def _expect(self, char: str) -> None:
        if self._peek() != char:
            self._fail(f"expected {char!r}")
        self._pos += 1

    def _fail(self, reason: str) -> NoReturn:
        raise TemplateError(f"{reason} at position {self._pos} in template {self._text!r}")
