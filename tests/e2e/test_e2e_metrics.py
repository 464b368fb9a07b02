"""GET /metrics: Prometheus metrics of requests, legacy calls and sessions."""

from __future__ import annotations

import httpx
import pytest

from tests.support import Gateway

pytestmark = pytest.mark.e2e


def _metrics(gateway: Gateway) -> str:
    reply = httpx.get(gateway.base.removesuffix("/fhir") + "/metrics", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return reply.text


def _value(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}} in the metrics")


def test_metrics_count_requests_legacy_calls_and_sessions(gateway: Gateway) -> None:
    before = _metrics(gateway)
    try:
        reads = _value(
            before, "bridge_requests_total", resource="Patient", interaction="read", status="200"
        )
    except AssertionError:
        reads = 0.0
    client = gateway.client()
    for _ in range(3):
        assert client.get("/Patient/100001").status_code == 200
    assert client.get("/Patient/999999").status_code == 404
    after = _metrics(gateway)
    assert (
        _value(after, "bridge_requests_total", resource="Patient", interaction="read", status="200")
        == reads + 3
    )
    assert (
        _value(after, "bridge_requests_total", resource="Patient", interaction="read", status="404")
        >= 1
    )
    assert (
        _value(
            after,
            "bridge_legacy_call_seconds_count",
            system="hospital",
            operation="GetPatient",
            outcome="ok",
        )
        >= 3
    )
    assert _value(after, "bridge_legacy_logins_total", system="hospital") >= 1
    assert _value(after, "bridge_legacy_sessions", system="hospital") >= 1
    assert "100001" not in after  # label values are names, never data
