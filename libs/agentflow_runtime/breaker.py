"""A circuit breaker: after repeated failures, calls to a dependency fail fast until it has had time to
recover.

CLOSED (calls go through; consecutive failures are counted) → OPEN after `failure_threshold` of them (calls
are refused) → HALF_OPEN once `open_seconds` have passed (one trial call goes through) → CLOSED when the trial
succeeds, OPEN again when it fails. Not thread-safe: use it from one event loop.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BreakerConfig", "CircuitBreaker", "CircuitState"]


class CircuitState(enum.Enum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """Consecutive failures that open the circuit, and how long it stays open before a trial call."""

    failure_threshold: int = 5
    open_seconds: float = 10.0


class CircuitBreaker:
    """See the module docstring. Callers ask `allow()` before a call and report `success()` or `failure()`
    after it (or `abandon()` when the call ended without saying anything about the dependency)."""

    def __init__(self, config: BreakerConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial = False

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit whose wait is over reads as half-open)."""
        if self._state is CircuitState.OPEN and self.retry_after() == 0.0:
            return CircuitState.HALF_OPEN
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted so far."""
        return self._failures

    def retry_after(self) -> float:
        """Seconds until an open circuit lets a trial call through (0 when it would now)."""
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.config.open_seconds - self._clock())

    def allow(self) -> bool:
        """Whether a call may go ahead now; a True in half-open state makes this call the trial."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN or self._trial:
            return False
        self._state = CircuitState.HALF_OPEN
        self._trial = True
        return True

    def success(self) -> None:
        """The call worked: close the circuit."""
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._trial = False

    def failure(self) -> None:
        """The call failed because of the dependency: count it; open at the threshold or after a trial."""
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or self._failures >= self.config.failure_threshold:
            self._state = CircuitState.OPEN
            self._opened_at = self._clock()
        self._trial = False

    def abandon(self) -> None:
        """The call ended without an outcome (cancelled): a trial slot is given back."""
        self._trial = False
