"""A circuit breaker per legacy system.

After `failures` transport failures in a row (the system down, refusing, or
too slow), the breaker opens: calls are answered 503 + Retry-After at once,
without waiting on a dead system. After `cooldown` seconds one call probes
(half-open); its success closes the breaker, its failure opens it again.
SOAP faults are answers, not failures: the system is up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from bridge.errors import BackendUnavailable

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"

    def __init__(
        self, *, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self.state = self.CLOSED
        self._count = 0
        self._opened_at = 0.0
        self._probing = False
        self.opened = 0  # how many times it opened

    def before(self) -> None:
        """Raise BackendUnavailable when no call may go to the legacy system now."""
        if self.state == self.CLOSED:
            return
        remaining = self._opened_at + self.cooldown - self._clock()
        if self.state == self.OPEN and remaining > 0:
            raise BackendUnavailable(
                "The legacy system is failing; the gateway stopped calling it for a moment.",
                retry_after=max(1, math.ceil(remaining)),
            )
        if self._probing:
            raise BackendUnavailable(
                "The legacy system is being probed after failures; retry shortly.", retry_after=1
            )
        self.state = self.HALF_OPEN
        self._probing = True

    def success(self) -> None:
        self.state = self.CLOSED
        self._count = 0
        self._probing = False

    def failure(self) -> None:
        self._probing = False
        self._count += 1
        if self.state == self.HALF_OPEN or self._count >= self.failures:
            if self.state != self.OPEN:
                self.opened += 1
            self.state = self.OPEN
            self._opened_at = self._clock()
