"""GET /metrics: Prometheus metrics of requests, legacy calls and sessions."""

from __future__ import annotations

import httpx
import pytest

from bridge import busypoll
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
    # `bridge serve` with one worker polls after each answer where it leaves a core
    # idle (bridge/busypoll.py); the window after the last one found nothing.
    polled = [
        line
        for line in after.splitlines()
        if line.startswith("bridge_busy_poll_idle_seconds_total ")
    ]
    assert polled
    if busypoll.cores() > 1:
        assert float(polled[0].rsplit(" ", 1)[1]) > 0
    else:
        assert float(polled[0].rsplit(" ", 1)[1]) == 0
    # Label values are names, never data (a sample's value may hold any digits).
    assert not [line for line in after.splitlines() if "100001" in line.rsplit(" ", 1)[0]]


def test_metrics_say_whether_next_pages_resumed_their_cursor(gateway: Gateway) -> None:
    def pages(outcome: str) -> float:
        try:
            return _value(
                _metrics(gateway), "bridge_search_pages_total", system="hospital", outcome=outcome
            )
        except AssertionError:
            return 0.0

    # The fixture's reset expired the gateway's legacy session: the first page is
    # tried again after a login, and still counts once.
    client = gateway.client()
    first, resumed = pages("first page"), pages("resumed")
    page = client.get("/Patient", params={"gender": "female", "_count": "50"}).json()
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    assert client.get(nxt).status_code == 200
    assert pages("first page") == first + 1
    assert pages("resumed") == resumed + 1


def test_a_made_up_resource_type_in_a_path_is_no_new_label(gateway: Gateway) -> None:
    client = gateway.client()
    for n in range(5):
        assert client.get(f"/Madeup{n}/1").status_code == 404
        # Without a token too: the metrics count refused requests.
        reply = httpx.get(f"{gateway.base}/Unasked{n}/1", timeout=10)
        assert reply.status_code == 401
    assert client.get("/AuditEvent/nonesuch").status_code in (403, 404)
    text = _metrics(gateway)
    assert "Madeup" not in text and "Unasked" not in text
    for status in ("404", "401"):
        unserved = {"resource": "-", "interaction": "read", "status": status}
        assert _value(text, "bridge_requests_total", **unserved) >= 5
    # The gateway's own types keep theirs.
    assert 'resource="AuditEvent"' in text
