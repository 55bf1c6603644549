"""A step's retry policy: how many attempts, how long to wait between them, and which errors retry.

The planner validates the `retry` field of a step and carries it in the step's params; this module only
reads it (with the same defaults) and computes the waits. `max_attempts` 1 (the default) means no retry.

The wait before attempt n+1 is `initial_backoff_seconds * multiplier**(n-1)`, capped at
`max_backoff_seconds`, then reduced by up to `jitter` of itself at random (`jitter` 0.2 waits 80-100 % of
it), so runs that failed together do not retry in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_RETRY_ON = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED")
"""Transient conditions by gRPC code name; a step timeout counts as DEADLINE_EXCEEDED."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    retry_on: frozenset[str] = frozenset(DEFAULT_RETRY_ON)

    @classmethod
    def from_params(cls, value: Any) -> RetryPolicy:
        """The policy in a step's params (`retry`), defaults for what is missing."""
        if not isinstance(value, Mapping):
            return cls()
        default = cls()
        return cls(
            max_attempts=max(1, int(value.get("max_attempts", default.max_attempts))),
            initial_backoff_seconds=float(
                value.get("initial_backoff_seconds", default.initial_backoff_seconds)
            ),
            max_backoff_seconds=float(value.get("max_backoff_seconds", default.max_backoff_seconds)),
            multiplier=float(value.get("multiplier", default.multiplier)),
            jitter=min(1.0, max(0.0, float(value.get("jitter", default.jitter)))),
            retry_on=frozenset(str(c) for c in value.get("retry_on", DEFAULT_RETRY_ON)),
        )

    def retries(self, attempt: int, code: str) -> bool:
        """Whether a failure with gRPC code name `code` at `attempt` (from 1) is followed by another."""
        return attempt < self.max_attempts and code in self.retry_on

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt `attempt` (from 1)."""
        base = min(self.max_backoff_seconds, self.initial_backoff_seconds * self.multiplier ** (attempt - 1))
        return max(0.0, base * (1.0 - self.jitter * rand()))
