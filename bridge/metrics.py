"""Prometheus metrics (`GET /metrics`), one registry per app.

Requests by resource type, interaction and status; request latency; each
legacy operation's latency and outcome; session pool size, waits, logins and
re-logins; breaker state; retries, interactions out of time, and writes whose
answer was lost (by what the lookup found). Label values are names from the
mappings, never data.

The per-request cost is one cached child per label set (`_child`); everything
per system is read from the backends' own counters when /metrics is scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_INTERACTIONS = {
    ("GET", 3): "read",
    ("GET", 2): "search-type",
    ("POST", 2): "create",
    ("PUT", 3): "update",
    ("PATCH", 3): "patch",
    ("DELETE", 3): "delete",
}


class _PoolCollector(Collector):
    def __init__(self, backends: Callable[[], Iterable[Any]]) -> None:
        self.backends = backends

    def collect(self) -> Iterable[Any]:
        size = GaugeMetricFamily(
            "bridge_legacy_sessions", "Open legacy sessions", labels=["system"]
        )
        busy = GaugeMetricFamily(
            "bridge_legacy_sessions_in_use", "Leased sessions", labels=["system"]
        )
        logins = CounterMetricFamily("bridge_legacy_logins", "Legacy logins", labels=["system"])
        relogins = CounterMetricFamily(
            "bridge_legacy_relogins", "Re-logins after an expired session", labels=["system"]
        )
        waits = CounterMetricFamily(
            "bridge_legacy_session_waits", "Waits for a session", labels=["system"]
        )
        timeouts = CounterMetricFamily(
            "bridge_legacy_session_wait_timeouts", "Waits that ended in 503", labels=["system"]
        )
        breaker = GaugeMetricFamily(
            "bridge_legacy_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            labels=["system"],
        )
        retries = CounterMetricFamily(
            "bridge_legacy_retries",
            "Attempts repeated after a transport failure or an expired session",
            labels=["system", "reason"],
        )
        deadlines = CounterMetricFamily(
            "bridge_legacy_deadlines_exceeded",
            "Interactions that ran out of their deadline",
            labels=["system"],
        )
        ambiguous = CounterMetricFamily(
            "bridge_ambiguous_writes",
            "Writes whose answer was lost, by what the lookup found",
            labels=["system", "outcome"],
        )
        pages = CounterMetricFamily(
            "bridge_search_pages",
            "Pages of cursor searches: first, resumed (the legacy cursor continued) or "
            "replayed (the search ran again up to the page), with why",
            labels=["system", "outcome"],
        )
        for backend in self.backends():
            name = [backend.name]
            stats = backend.stats
            for outcome, count in sorted(stats.pages.items()):
                pages.add_metric([backend.name, outcome], count)
            for reason in ("transport", "connect", "expired-session"):
                retries.add_metric([backend.name, reason], stats.retries.get(reason, 0))
            deadlines.add_metric(name, stats.deadlines)
            for outcome in ("applied", "not-applied", "unknown"):
                ambiguous.add_metric([backend.name, outcome], stats.ambiguous.get(outcome, 0))
            size.add_metric(name, backend.pool.logged_in)
            busy.add_metric(name, backend.pool.in_use)
            logins.add_metric(name, backend.stats.logins)
            relogins.add_metric(name, backend.stats.relogins)
            waits.add_metric(name, backend.pool.waits)
            timeouts.add_metric(name, backend.pool.timeouts)
            states = {"closed": 0, "half-open": 1, "open": 2}
            breaker.add_metric(name, states[backend.breaker.state])
        yield from (size, busy, logins, relogins, waits, timeouts, breaker)
        yield from (retries, deadlines, ambiguous, pages)


class Metrics:
    def __init__(self, backends: Callable[[], Iterable[Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bridge_requests",
            "FHIR requests",
            ["resource", "interaction", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bridge_request_seconds",
            "FHIR request latency",
            ["resource", "interaction"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.legacy = Histogram(
            "bridge_legacy_call_seconds",
            "Legacy SOAP call latency",
            ["system", "operation", "outcome"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_PoolCollector(backends))
        # Read from the shared store now and then: the same for every replica.
        self.async_depth = Gauge(
            "bridge_async_queue_depth",
            "Asynchronous writes accepted and not yet delivered",
            registry=self.registry,
        )
        self.async_oldest = Gauge(
            "bridge_async_oldest_seconds",
            "Age of the oldest asynchronous write not yet delivered (0 when none)",
            registry=self.registry,
        )
        # labels() costs microseconds per call; the label sets are few and fixed.
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, resource: str, interaction: str, status: str, seconds: float) -> None:
        self._child(self.requests, resource, interaction, status).inc()
        self._child(self.latency, resource, interaction).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def async_queue(self, depth: int, oldest: float | None) -> None:
        """The queue of asynchronous writes: its depth and when its oldest was accepted."""
        self.async_depth.set(depth)
        self.async_oldest.set(max(0.0, time.time() - oldest) if oldest is not None else 0)

    def legacy_call(self, system: str, operation: str, outcome: str, seconds: float) -> None:
        self._child(self.legacy, system, operation, outcome).observe(seconds)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/fhir"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            parts = [p for p in scope["path"].split("/") if p]
            resource = parts[1] if len(parts) > 1 and parts[1][:1].isupper() else "-"
            last = parts[-1] if parts else ""
            if last.startswith("$"):
                interaction = "operation"
            elif last == "metadata":
                interaction = "capabilities"
            elif len(parts) == 1:
                interaction = "batch"
            else:
                interaction = _INTERACTIONS.get((scope["method"], len(parts)), "other")
            self.metrics.request(resource, interaction, str(status), time.perf_counter() - started)
