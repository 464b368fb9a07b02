"""Requests and latencies tallied as they happen, added to prometheus_client in bulk."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest

from bridge import busypoll
from bridge.metrics import _BUCKETS, FLUSH_AFTER, Metrics, _SharedPool

# Below the first bound, on bounds (a value equal to a bound is in that bucket),
# between bounds, past the last one (+Inf).
_SECONDS = [0.0, 0.0004, 0.001, 0.0011, 0.0025, 0.007, 0.05, 0.3, 1, 1.5, 10, 12.5, 600.0]


def _samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "_")]


def _reference(name: str, labels: dict[str, str], seconds: list[float]) -> str:
    """The same observations made one by one by prometheus_client's own Histogram."""
    registry = CollectorRegistry()
    histogram = Histogram(name, "-", list(labels), buckets=_BUCKETS, registry=registry)
    child = histogram.labels(**labels)
    for value in seconds:
        child.observe(value)
    return generate_latest(registry).decode()


def _without_created(lines: list[str]) -> list[str]:
    return [line for line in lines if "_created" not in line]


def test_tallied_latencies_expose_what_one_by_one_observations_would() -> None:
    metrics = Metrics(lambda: [])
    for value in _SECONDS:
        metrics.request("Patient", "read", "200", value)
        metrics.legacy_call("hospital", "GetPatient", "ok", value)
    text = metrics.render().decode()

    expected = _reference(
        "bridge_request_seconds", {"resource": "Patient", "interaction": "read"}, _SECONDS
    )
    assert _without_created(_samples(text, "bridge_request_seconds")) == _without_created(
        _samples(expected, "bridge_request_seconds")
    )
    legacy = _reference(
        "bridge_legacy_call_seconds",
        {"system": "hospital", "operation": "GetPatient", "outcome": "ok"},
        _SECONDS,
    )
    assert _without_created(_samples(text, "bridge_legacy_call_seconds")) == _without_created(
        _samples(legacy, "bridge_legacy_call_seconds")
    )
    count = (
        f'bridge_request_seconds_count{{interaction="read",resource="Patient"}} {len(_SECONDS)}.0'
    )
    assert count in text
    assert (
        'bridge_request_seconds_bucket{interaction="read",le="+Inf",resource="Patient"} 13.0'
        in (text)
    )


def test_counts_by_label_set_survive_several_scrapes() -> None:
    metrics = Metrics(lambda: [])
    for status in ("200", "200", "404"):
        metrics.request("Patient", "read", status, 0.002)
    first = metrics.render().decode()
    assert 'bridge_requests_total{interaction="read",resource="Patient",status="200"} 2.0' in first
    assert 'bridge_requests_total{interaction="read",resource="Patient",status="404"} 1.0' in first
    metrics.request("Patient", "read", "200", 0.002)
    metrics.request("Observation", "create", "201", 0.004)
    second = metrics.render().decode()
    assert 'bridge_requests_total{interaction="read",resource="Patient",status="200"} 3.0' in second
    assert 'bridge_requests_total{interaction="read",resource="Patient",status="404"} 1.0' in second
    assert (
        'bridge_requests_total{interaction="create",resource="Observation",status="201"} 1.0'
        in second
    )
    assert 'bridge_request_seconds_count{interaction="read",resource="Patient"} 4.0' in second
    # A scrape with nothing new changes nothing.
    assert _without_created(metrics.render().decode().splitlines()) == _without_created(
        second.splitlines()
    )


def _count(metrics: Metrics) -> float:
    text = generate_latest(metrics.registry).decode()
    for line in text.splitlines():
        if line.startswith('bridge_requests_total{interaction="read",resource="Patient"'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_with_workers_the_tallies_reach_the_shared_metrics_within_the_flush_delay() -> None:
    metrics = Metrics(lambda: [])
    metrics.shared = _SharedPool(lambda: [])  # as in a worker of `bridge serve --workers N`
    seen: list[float] = []
    flushes: list[int] = []  # one entry a flush
    flush = metrics.flush

    def counted_flush() -> None:
        flushes.append(1)
        flush()

    metrics.flush = counted_flush  # type: ignore[method-assign]

    async def main() -> None:
        for _ in range(3):
            metrics.request("Patient", "read", "200", 0.002)
        seen.append(_count(metrics))  # not yet: the turn goes on
        await asyncio.sleep(0)
        seen.append(_count(metrics))  # not yet: later turns may add theirs
        metrics.request("Patient", "read", "200", 0.002)
        for _ in range(1000):  # the timer's delay, at most a second
            if flushes:
                break
            await asyncio.sleep(0.001)
        seen.append(_count(metrics))  # one flush for all four
        metrics.legacy_call("hospital", "GetPatient", "ok", 0.001)
        await asyncio.sleep(FLUSH_AFTER * 3)

    asyncio.run(main())
    assert seen == [0.0, 0.0, 4.0]
    assert len(flushes) == 2
    text = generate_latest(metrics.registry).decode()
    labels = 'operation="GetPatient",outcome="ok",system="hospital"'
    assert f"bridge_legacy_call_seconds_count{{{labels}}} 1.0" in text


def test_with_workers_and_no_running_loop_the_tally_goes_at_once() -> None:
    metrics = Metrics(lambda: [])
    metrics.shared = _SharedPool(lambda: [])
    metrics.request("Patient", "read", "200", 0.002)
    assert _count(metrics) == 1.0


def _bucket(le: float) -> str:
    labels = f'interaction="read",le="{float(le)!r}",resource="Patient"'
    return f"bridge_request_seconds_bucket{{{labels}}}"


@pytest.mark.parametrize("value", [0.001, 0.0025, 1, 10])
def test_a_value_on_a_bound_is_in_that_bucket(value: float) -> None:
    metrics = Metrics(lambda: [])
    metrics.request("Patient", "read", "200", value)
    text = metrics.render().decode()
    assert f"{_bucket(value)} 1.0" in text
    below = [b for b in _BUCKETS if b < value]
    if below:
        assert f"{_bucket(below[-1])} 0.0" in text


def test_polling_for_nothing_is_counted_once_and_again_on_a_new_loop() -> None:
    metrics = Metrics(lambda: [])
    window = 0.0005

    async def one_stretch() -> None:
        busypoll.kick(asyncio.get_running_loop())
        poll = busypoll.current()
        assert poll is not None
        while poll.polling:  # nothing comes: the stretch ends a window later
            await asyncio.sleep(0)

    def counted() -> float | None:
        metrics.render()
        return metrics.registry.get_sample_value("bridge_busy_poll_idle_seconds_total")

    busypoll.configure(window)
    try:
        assert counted() == 0
        asyncio.run(one_stretch())
        assert counted() == pytest.approx(window)
        assert counted() == pytest.approx(window)  # a second scrape adds nothing
        asyncio.run(one_stretch())  # another loop: its polling counts from 0
        assert counted() == pytest.approx(2 * window)
    finally:
        busypoll.configure(0)
