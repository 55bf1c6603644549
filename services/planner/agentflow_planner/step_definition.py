"""The validated form of one plan step, shared by every workflow kind's front end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .step_params import StepKind

__all__ = ["StepDefinition"]


@dataclass(frozen=True)
class StepDefinition:
    """One validated step; `params` are normalised (see `step_params`), `needs` include implicit ones."""

    id: str
    kind: StepKind
    needs: tuple[str, ...]
    params: dict[str, Any]
    description: str = ""
    source: str = ""
    """Path of the definition field that declared the step (`states.review`, `root.sequence[0]`), for
    violations found after compilation; empty for dag steps (`steps[i]`, found by id)."""
