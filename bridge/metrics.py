"""Prometheus metrics (`GET /metrics`), one registry per app.

Requests by resource type, interaction and status; request latency; each
legacy operation's latency and outcome; session pool size, waits, logins and
re-logins; breaker state; retries, interactions out of time, and writes whose
answer was lost (by what the lookup found). Label values are names from the
mappings, never data.

The per-request cost is one cached child per label set (`_child`); everything
per system is read from the backends' own counters when /metrics is scraped.

With `bridge serve --workers N` every worker keeps its values in files the
workers share (prometheus_client's multiprocess mode, set up by bridge/workers.py),
so whichever worker answers /metrics shows the sum of all of them.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.middleware.status import STATUS, noting

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


# Each legacy system's sessions, breaker and counters, read from its backend:
# (name, help, kind, labels after `system`). A gauge's kind says how the workers of
# `bridge serve --workers N` combine it: "sum" or "max" over the living ones.
_POOL: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("bridge_legacy_sessions", "Open legacy sessions", "sum", ()),
    ("bridge_legacy_sessions_in_use", "Leased sessions", "sum", ()),
    ("bridge_legacy_logins", "Legacy logins", "counter", ()),
    ("bridge_legacy_relogins", "Re-logins after an expired session", "counter", ()),
    ("bridge_legacy_session_waits", "Waits for a session", "counter", ()),
    ("bridge_legacy_session_wait_timeouts", "Waits that ended in 503", "counter", ()),
    (
        "bridge_legacy_breaker_state",
        "Circuit breaker: 0 closed, 1 half-open, 2 open",
        "max",
        (),
    ),
    (
        "bridge_legacy_retries",
        "Attempts repeated after a transport failure or an expired session",
        "counter",
        ("reason",),
    ),
    (
        "bridge_legacy_deadlines_exceeded",
        "Interactions that ran out of their deadline",
        "counter",
        (),
    ),
    (
        "bridge_ambiguous_writes",
        "Writes whose answer was lost, by what the lookup found",
        "counter",
        ("outcome",),
    ),
    (
        "bridge_search_pages",
        "Pages of cursor searches: first, resumed (the legacy cursor continued) or "
        "replayed (the search ran again up to the page), with why",
        "counter",
        ("outcome",),
    ),
)
_COUNTERS = frozenset(name for name, _, kind, _ in _POOL if kind == "counter")
_BREAKER = {"closed": 0, "half-open": 1, "open": 2}


def _pool_samples(backend: Any) -> Iterator[tuple[str, tuple[str, ...], float]]:
    """(metric, label values, value) of one backend, in the order of `_POOL`."""
    name = backend.name
    stats = backend.stats
    pool = backend.pool
    yield "bridge_legacy_sessions", (name,), pool.logged_in
    yield "bridge_legacy_sessions_in_use", (name,), pool.in_use
    yield "bridge_legacy_logins", (name,), stats.logins
    yield "bridge_legacy_relogins", (name,), stats.relogins
    yield "bridge_legacy_session_waits", (name,), pool.waits
    yield "bridge_legacy_session_wait_timeouts", (name,), pool.timeouts
    yield "bridge_legacy_breaker_state", (name,), _BREAKER[backend.breaker.state]
    for reason in ("transport", "connect", "expired-session"):
        yield "bridge_legacy_retries", (name, reason), stats.retries.get(reason, 0)
    yield "bridge_legacy_deadlines_exceeded", (name,), stats.deadlines
    for outcome in ("applied", "not-applied", "unknown"):
        yield "bridge_ambiguous_writes", (name, outcome), stats.ambiguous.get(outcome, 0)
    for outcome, count in sorted(stats.pages.items()):
        yield "bridge_search_pages", (name, outcome), count


class _PoolCollector(Collector):
    """One process: the backends' figures, read when /metrics is scraped."""

    def __init__(self, backends: Callable[[], Iterable[Any]]) -> None:
        self.backends = backends

    def collect(self) -> Iterable[Any]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, doc, kind, labels in _POOL:
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            families[name] = family(name, doc, labels=["system", *labels])
        for backend in self.backends():
            for name, labels, value in _pool_samples(backend):
                families[name].add_metric(list(labels), value)
        yield from families.values()


class _SharedPool:
    """Workers of `bridge serve --workers N`: each copies its backends' figures into
    prometheus_client's files shared by the workers (every second and when it answers
    /metrics), so any worker's /metrics shows them all: sessions summed over the
    living workers, the worst breaker, counters summed."""

    def __init__(self, backends: Callable[[], Iterable[Any]]) -> None:
        self.backends = backends
        self.metrics: dict[str, Any] = {}
        for name, doc, kind, labels in _POOL:
            names = ["system", *labels]
            if kind == "counter":
                self.metrics[name] = Counter(name, doc, names, registry=None)
            elif kind == "max":
                self.metrics[name] = Gauge(
                    name, doc, names, registry=None, multiprocess_mode="livemax"
                )
            else:
                self.metrics[name] = Gauge(
                    name, doc, names, registry=None, multiprocess_mode="livesum"
                )
        # What each backend's counters stood at when last copied (a hot reload
        # brings new backends, whose counters start again at 0).
        self.copied: weakref.WeakKeyDictionary[Any, dict[tuple[str, tuple[str, ...]], float]] = (
            weakref.WeakKeyDictionary()
        )

    def sync(self) -> None:
        for backend in self.backends():
            copied = self.copied.setdefault(backend, {})
            for name, labels, value in _pool_samples(backend):
                child = self.metrics[name].labels(*labels)
                if name not in _COUNTERS:
                    child.set(value)
                    continue
                before = copied.get((name, labels), 0)
                if value > before:
                    child.inc(value - before)
                copied[(name, labels)] = value


def shared() -> bool:
    """True in a worker of `bridge serve --workers N`: prometheus_client keeps every
    value in files the workers share (PROMETHEUS_MULTIPROC_DIR, set by the supervisor
    before it starts them; bridge/workers.py)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


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
        self.shared = _SharedPool(backends) if shared() else None
        if self.shared is None:
            self.registry.register(_PoolCollector(backends))
        # Read from the shared store now and then: the same for every replica.
        self.async_depth = Gauge(
            "bridge_async_queue_depth",
            "Asynchronous writes accepted and not yet delivered",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.async_oldest = Gauge(
            "bridge_async_oldest_seconds",
            "Age of the oldest asynchronous write not yet delivered (0 when none)",
            registry=self.registry,
            multiprocess_mode="mostrecent",
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
        if self.shared is None:
            return generate_latest(self.registry)
        self.shared.sync()
        every = CollectorRegistry()
        MultiProcessCollector(every)  # type: ignore[no-untyped-call]  # every worker's files
        return generate_latest(every)

    async def share(self, every: float = 1.0) -> None:
        """In a worker: copy the backends' figures for the other workers' /metrics."""
        if self.shared is None:
            return
        while True:
            await asyncio.sleep(every)
            self.shared.sync()

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
        state, send = noting(scope, send)
        try:
            await self.app(scope, receive, send)
        finally:
            status = state[STATUS]
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
