"""Violations: one problem in a workflow definition, named by the path of the offending field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DefinitionError", "Violation", "Violations"]


@dataclass(frozen=True)
class Violation:
    """`field` is a path such as `steps[1].needs`; `description` says what is wrong."""

    field: str
    description: str


class Violations:
    """Collects violations in the order they are found."""

    def __init__(self) -> None:
        self.items: list[Violation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(Violation(field, description))

    def __bool__(self) -> bool:
        return bool(self.items)


class DefinitionError(ValueError):
    """A workflow definition with one or more violations."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        self.violations = tuple(violations)
        first = self.violations[0] if self.violations else Violation("", "invalid definition")
        more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
        super().__init__(f"{first.field}: {first.description}{more}")
