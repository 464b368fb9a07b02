"""Per-client rate limits: a token bucket per app (429 + Retry-After when empty).

A client is the authenticated token's `client_id`, or the remote address when
there is no token (open endpoints, `auth.mode: off`); the middleware sits
inside authentication so it sees the principal. Buckets live in this process
(each worker counts alone) and memory stays bounded: a bucket idle long
enough to have refilled is the same as a new one and is dropped, and past
`max_clients` the least recently seen buckets go first.

Liveness, readiness and metrics are never limited: probes come from one
address and must not be turned away.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.errors import FhirError

__all__ = ["RateLimitMiddleware", "TokenBuckets", "TooManyRequests"]

# With a trailing slash too: the router serves it as the same address.
_EXEMPT = frozenset(p + s for p in ("/healthz", "/readyz", "/metrics") for s in ("", "/"))


class TooManyRequests(FhirError):
    status = 429
    code = "throttled"
    default_diagnostics = "Too many requests from this client; retry after the delay given."


class TokenBuckets:
    """Token buckets by client key: `rate` tokens a second, at most `burst` saved.

    buckets = TokenBuckets(rate=10, burst=20)
    wait = buckets.take("client:portal")  # 0.0: go ahead; else seconds to wait
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        # key -> (tokens, last seen); dict order is least recently seen first.
        self._buckets: dict[str, tuple[float, float]] = {}
        self._refill = self.burst / rate if rate > 0 else math.inf
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Spend one token of `key`'s bucket: 0.0 if there was one, else the seconds to wait."""
        now = self.clock()
        if now >= self._next_sweep or len(self._buckets) >= self.max_clients:
            self._sweep(now)
        entry = self._buckets.pop(key, None)
        if entry is None:
            tokens = self.burst
        else:
            tokens = min(self.burst, entry[0] + (now - entry[1]) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _sweep(self, now: float) -> None:
        # Oldest first: stop at the first bucket that may not have refilled yet.
        idle = now - self._refill
        buckets = self._buckets
        while buckets:
            key = next(iter(buckets))
            if buckets[key][1] > idle and len(buckets) < self.max_clients:
                break
            del buckets[key]
        self._next_sweep = now + min(self._refill, 60.0)


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        rate: float,
        burst: int,
        render: Callable[[FhirError], Any],
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.render = render
        self.buckets = (
            TokenBuckets(rate=rate, burst=burst, max_clients=max_clients, clock=clock)
            if rate > 0
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.buckets is None or scope["type"] != "http" or scope["path"] in _EXEMPT:
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(_client_key(scope))
        if wait > 0:
            retry_after = str(max(1, math.ceil(wait)))
            error = TooManyRequests(headers={"Retry-After": retry_after})
            await self.render(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _client_key(scope: Scope) -> str:
    principal = scope.get("state", {}).get("principal")
    client_id = getattr(principal, "client_id", None)
    if client_id:
        return f"client:{client_id}"
    client = scope.get("client")
    return f"addr:{client[0]}" if client else "addr:-"
