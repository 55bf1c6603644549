"""The circuit breaker's states, driven by a fake clock."""

from __future__ import annotations

from agentflow_runtime.breaker import BreakerConfig, CircuitBreaker, CircuitState


def state(breaker: CircuitBreaker) -> CircuitState:
    """The breaker's state (a call, so mypy does not narrow the property between steps)."""
    return breaker.state


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_the_threshold_and_fails_fast() -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=3, open_seconds=10), clock=Clock())
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert state(breaker) is CircuitState.CLOSED
    assert breaker.allow()
    breaker.failure()
    assert state(breaker) is CircuitState.OPEN
    assert not breaker.allow()
    assert breaker.retry_after() == 10


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=2), clock=Clock())
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert state(breaker) is CircuitState.CLOSED and breaker.failures == 1


def test_half_open_lets_one_trial_through_and_its_outcome_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, open_seconds=5), clock=clock)
    breaker.failure()
    clock.now += 5
    assert state(breaker) is CircuitState.HALF_OPEN
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one at a time
    breaker.failure()
    assert state(breaker) is CircuitState.OPEN and not breaker.allow()
    clock.now += 5
    assert breaker.allow()
    breaker.success()
    assert state(breaker) is CircuitState.CLOSED and breaker.allow()


def test_an_abandoned_trial_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, open_seconds=1), clock=clock)
    breaker.failure()
    clock.now += 1
    assert breaker.allow()
    breaker.abandon()
    assert breaker.allow()
