"""The circuit breaker: closed, open after failures, one probe when half-open."""

from __future__ import annotations

import pytest

from bridge.errors import BackendUnavailable
from bridge.soap.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_in_a_row_and_answers_at_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=10, clock=clock)
    for _ in range(2):
        breaker.before()
        breaker.failure()
    breaker.before()
    breaker.success()  # a success resets the count
    for _ in range(3):
        breaker.before()
        breaker.failure()
    assert breaker.state == "open"
    with pytest.raises(BackendUnavailable) as caught:
        breaker.before()
    assert caught.value.headers["Retry-After"] == "10"
    clock.now += 4
    with pytest.raises(BackendUnavailable) as caught:
        breaker.before()
    assert caught.value.headers["Retry-After"] == "6"


def test_breaker_lets_one_probe_through_after_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=5, clock=clock)
    breaker.before()
    breaker.failure()
    clock.now += 5
    breaker.before()  # the probe
    assert breaker.state == "half-open"
    with pytest.raises(BackendUnavailable):
        breaker.before()  # others wait while it probes
    breaker.failure()
    assert breaker.state == "open"
    assert breaker.opened == 2
    clock.now += 5
    breaker.before()
    breaker.success()
    assert breaker.state == "closed"
    breaker.before()
