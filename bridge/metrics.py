"""Prometheus metrics (`GET /metrics`), one registry per app.

Requests by resource type, interaction and status; request latency; each
legacy operation's latency and outcome; session pool size, waits, logins and
re-logins; breaker state; retries, interactions out of time, and writes whose
answer was lost (by what the lookup found); the seconds the process polled
its connections for nothing (bridge/busypoll.py). Label values are names from
the mappings, never data.

Requests and latencies are tallied in plain Python as they happen (`_Tally`)
and added to prometheus_client's metrics in bulk: prometheus_client takes a
lock for every increment (and writes a shared file with workers), so a read's
counter and two observations cost ~1.3 µs in one process and ~3.8 µs with
workers, against ~0.4 µs tallied. Everything per system is read from the
backends' own counters when /metrics is scraped.

With `bridge serve --workers N` every worker keeps its values in files the
workers share (prometheus_client's multiprocess mode, set up by bridge/workers.py),
so whichever worker answers /metrics shows the sum of all of them. A worker adds
its tallies to those files within `FLUSH_AFTER` (10 ms) of the first of them, on
a timer: a flush writes ~5 values at ~1.4 µs each, which at the end of every
turn of the loop would cost 1-7 µs a request with two workers (by how many
requests a turn holds). One process adds them when scraped.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge import busypoll
from bridge.busypoll import BusyPoll
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


# With workers: how long a worker's tallies wait before they go to the shared files.
FLUSH_AFTER = 0.01


def shared() -> bool:
    """True in a worker of `bridge serve --workers N`: prometheus_client keeps every
    value in files the workers share (PROMETHEUS_MULTIPROC_DIR, set by the supervisor
    before it starts them; bridge/workers.py)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class _Tally:
    """Requests counted and latencies observed since the last flush, by label set.

    A histogram's tally is its sum, then its count in each bucket (`le` as
    prometheus_client places it: the first bucket whose bound is not below the
    value, the last one +Inf)."""

    __slots__ = ("counted", "observed")

    def __init__(self) -> None:
        self.counted: dict[tuple[str, ...], int] = {}
        self.observed: dict[tuple[Any, tuple[str, ...]], list[float]] = {}

    def observe(self, metric: Any, labels: tuple[str, ...], seconds: float) -> None:
        key = (metric, labels)
        sums = self.observed.get(key)
        if sums is None:
            sums = self.observed[key] = [0.0] * (len(_BUCKETS) + 2)
        sums[0] += seconds
        sums[1 + bisect_left(_BUCKETS, seconds)] += 1


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
        self.polled = Counter(
            "bridge_busy_poll_idle_seconds",
            "Seconds this process polled its connections after activity and found "
            "nothing: the window ending each stretch of polling (bridge/busypoll.py)",
            registry=self.registry,
        )
        self._polled: tuple[BusyPoll | None, float] = (None, 0.0)  # as last copied
        # labels() costs microseconds per call; the label sets are few and fixed.
        self._children: dict[tuple[str, ...], Any] = {}
        self._tally = _Tally()
        self._flush_due = False  # with workers: a flush is set on a timer

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, resource: str, interaction: str, status: str, seconds: float) -> None:
        """In the event loop's thread, as every tally."""
        counted = self._tally.counted
        key = (resource, interaction, status)
        counted[key] = counted.get(key, 0) + 1
        self._tally.observe(self.latency, (resource, interaction), seconds)
        if self.shared is not None and not self._flush_due:
            self._flush_soon()

    def legacy_call(self, system: str, operation: str, outcome: str, seconds: float) -> None:
        self._tally.observe(self.legacy, (system, operation, outcome), seconds)
        if self.shared is not None and not self._flush_due:
            self._flush_soon()

    def _flush_soon(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: now
            self.flush()
            return
        self._flush_due = True
        loop.call_later(FLUSH_AFTER, self.flush)

    def _copy_polling(self) -> None:
        poll = busypoll.current()
        if poll is None:
            return
        last, copied = self._polled
        if last is not poll:  # another loop's polling: it counts from 0
            copied = 0.0
        if poll.wasted_total > copied:
            self.polled.inc(poll.wasted_total - copied)
        self._polled = (poll, poll.wasted_total)

    def flush(self) -> None:
        """Add what was tallied since the last flush to prometheus_client's metrics."""
        self._copy_polling()
        self._flush_due = False
        tally, self._tally = self._tally, _Tally()
        for labels, count in tally.counted.items():
            self._child(self.requests, *labels).inc(count)
        for (metric, labels), sums in tally.observed.items():
            child = self._child(metric, *labels)
            # A bulk observe: prometheus_client's Histogram keeps one value per bucket
            # (not cumulative) and one sum (tests/test_metrics.py holds it to it).
            child._sum.inc(sums[0])
            for bucket, observed in zip(child._buckets, sums[1:], strict=True):
                if observed:
                    bucket.inc(observed)

    def render(self) -> bytes:
        self.flush()
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
            self._copy_polling()

    def async_queue(self, depth: int, oldest: float | None) -> None:
        """The queue of asynchronous writes: its depth and when its oldest was accepted."""
        self.async_depth.set(depth)
        self.async_oldest.set(max(0.0, time.time() - oldest) if oldest is not None else 0)


class MetricsMiddleware:
    """Counts and times every /fhir request by resource type, interaction and status.

    The resource label is the path's type only when `served(type)` says the
    gateway serves it, else "-": a label comes from a bounded set, whatever
    paths clients (authenticated or not) make up."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, served: Callable[[str], bool]) -> None:
        self.app = app
        self.metrics = metrics
        self.served = served

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
            resource = parts[1] if len(parts) > 1 and self.served(parts[1]) else "-"
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
