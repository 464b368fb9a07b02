"""Deadlines and retry policy for the calls of one FHIR interaction.

An interaction gets one `Deadline` when it starts; waiting for a session,
logging in, every SOAP call and every pause between retries spend from it,
and no single call may wait longer than what is left. `RetryPolicy` says how
often a safe (read-only) interaction is tried again and how long to pause:
capped exponential backoff with full jitter, so retries from many requests
do not hit a recovering system in step.

    policy = RetryPolicy(retries=2, backoff_base=0.1, backoff_cap=2.0, deadline=30)
    policy.backoff(1, random.random)   # a pause in [0, 0.1)
    policy.backoff(3, random.random)   # a pause in [0, 0.4)

Both take the clock and the randomness from outside, so tests never sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Deadline", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How a legacy system's interactions are retried and bounded (from `connection:`)."""

    retries: int = 2  # further attempts of a read after the first
    backoff_base: float = 0.1  # seconds: the cap of the first pause
    backoff_cap: float = 2.0  # seconds: no pause is longer
    deadline: float = 30.0  # seconds a whole interaction may take

    def backoff(self, retry: int, random: Callable[[], float]) -> float:
        """The pause before retry number `retry` (1, 2, ...): full jitter, capped."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** max(0, retry - 1))
        return random() * ceiling


class Deadline:
    """The moment by which one interaction must be over."""

    __slots__ = ("_clock", "at", "seconds")

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self.at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self.at

    def cap(self, seconds: float) -> float:
        """`seconds`, or what is left of the deadline when that is less."""
        return min(seconds, self.remaining())
