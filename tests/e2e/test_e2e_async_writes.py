"""Asynchronous writes (`Prefer: respond-async`): 202, a status URL, delivery later.

Wearable readings go to the EHR's vitals; the mock's side door shows what the
EHR stored, in the order it stored it (its ReadingIds count up). Outages are
the mock's `refuse_seconds` (every EHR call answered 503) until the test
clears it. Every wait polls with a bounded deadline; nothing is timed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import Gateway, start_gateway

pytestmark = pytest.mark.e2e

FHIR_JSON = "application/fhir+json"
SCOPES = "user/Observation.crs"
ASYNC = {"Content-Type": FHIR_JSON, "Prefer": "respond-async"}
ALICE, BOB = "100021", "100022"
# Quick retries and short leases, so that tests wait seconds, not minutes.
FAST = {
    "retry_base": 0.2,
    "retry_cap": 1.0,
    "lease": 3,
    "poll_interval": 0.1,
    "unsure_delay": 4,  # longer than the slowest EHR answer the tests inject (3 s)
    "measure_interval": 0.2,
}


def _reading(value: int, mrn: str, minute: int = 0) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "55423-8"}]},
        "subject": {"reference": f"Patient/{mrn}"},
        "effectiveDateTime": f"2026-11-24T14:{minute:02d}:00Z",
        "valueQuantity": {
            "value": value,
            "unit": "{steps}",
            "system": "http://unitsofmeasure.org",
            "code": "{steps}",
        },
        "device": {"identifier": {"value": "FITBAND-7"}},
    }


def _transaction(readings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
                "resource": r,
                "request": {"method": "POST", "url": "Observation"},
            }
            for i, r in enumerate(readings, 1)
        ],
    }


def _accepted(reply: httpx.Response, gateway: Gateway) -> str:
    assert reply.status_code == 202, reply.text
    location = reply.headers["content-location"]
    assert location.startswith(f"{gateway.base}/_async/")
    assert reply.headers["preference-applied"] == "respond-async"
    return location


def _result(client: httpx.Client, location: str, fhir: Any, within: float = 60) -> dict[str, Any]:
    """Poll the status URL until the write is finished; its result entry."""
    deadline = time.monotonic() + within
    while True:
        reply = client.get(location)
        if reply.status_code != 202:
            break
        assert "retry-after" in reply.headers and reply.headers["x-progress"]
        assert time.monotonic() < deadline, f"not delivered: {reply.headers['x-progress']}"
        time.sleep(0.1)
    assert reply.status_code == 200, reply.text
    bundle = fhir(reply.json())
    assert bundle["type"] == "batch-response"
    assert len(bundle["entry"]) == 1
    entry: dict[str, Any] = bundle["entry"][0]
    return entry


def _steps(hospital: MockHospital, mrn: str) -> list[dict[str, Any]]:
    """The readings the tests stored (the FITBAND-7 step counts), in the EHR's order."""
    rows = hospital.get("/ehr/vitals", mrn=mrn, type="STEPS")
    stored = [r for r in rows if r.get("DeviceId") == "FITBAND-7"]
    return sorted(stored, key=lambda r: r["ReadingId"])


@pytest.fixture
def outage_gateway(
    mock_hospital_server: MockHospital, mock_hospital: MockHospital, tmp_path: Path
) -> Iterator[Gateway]:
    """A gateway of its own, retrying quickly."""
    with start_gateway(
        tmp_path, mock_hospital_server.ehr_url, extra={"async_writes": FAST}
    ) as gateway:
        yield gateway


def test_an_async_create_is_delivered_once(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    app = gateway.client(SCOPES)
    reply = app.post("/Observation", json=_reading(4101, ALICE), headers=ASYNC)
    location = _accepted(reply, gateway)
    assert fhir(reply.json())["resourceType"] == "OperationOutcome"
    entry = _result(app, location, fhir)
    assert entry["response"]["status"].startswith("201")
    created = entry["resource"]
    assert entry["response"]["location"].startswith(f"{gateway.base}/Observation/{created['id']}")
    assert [r["ReadingId"] for r in _steps(mock_hospital, ALICE)] == [created["id"]]
    # Only the client that sent it sees it.
    token = gateway.issuer.mint(scope=SCOPES, client_id="someone-else")
    other = app.get(location, headers={"Authorization": f"Bearer {token}"})
    assert other.status_code == 404
    assert fhir(other.json())["resourceType"] == "OperationOutcome"
    # Finished: nothing to cancel.
    assert app.delete(location).status_code == 409


def test_a_status_url_is_the_user_and_patient_context_s_own(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    def client(scope: str, **claims: Any) -> httpx.Client:
        token = gateway.issuer.mint(scope=scope, client_id="test-app", **claims)
        made = httpx.Client(
            base_url=gateway.base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        gateway.clients.append(made)
        return made

    app = client("user/*.* system/*.*")
    location = _accepted(app.post("/Observation", json=_reading(4102, BOB), headers=ASYNC), gateway)
    # The same app launched for another patient, or used by another user: no such URL.
    strangers = [
        client("patient/*.read", patient=ALICE),
        client("user/*.* system/*.*", subject="another-user"),
    ]
    for stranger in strangers:
        for reply in (stranger.get(location), stranger.delete(location)):
            assert reply.status_code == 404, reply.text
            assert fhir(reply.json())["resourceType"] == "OperationOutcome"
            assert "4102" not in reply.text
    entry = _result(app, location, fhir)
    assert entry["resource"]["valueQuantity"]["value"] == 4102
    for stranger in strangers:
        reply = stranger.get(location)
        assert reply.status_code == 404 and "4102" not in reply.text
    # A new token of the same user and context sees it.
    assert _result(client("user/*.* system/*.*"), location, fhir) == entry
    assert len([r for r in _steps(mock_hospital, BOB) if r["Value"] == "4102"]) == 1


def test_an_async_transaction_of_readings_is_delivered_whole(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    app = gateway.client(SCOPES)
    readings = [_reading(4200 + i, ALICE, minute=i) for i in range(5)]
    reply = app.post(gateway.base, json=_transaction(readings), headers=ASYNC)
    entry = _result(app, _accepted(reply, gateway), fhir)
    assert entry["response"]["status"].startswith("200")
    answer = entry["resource"]
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"].split()[0] for e in answer["entry"]] == ["201"] * 5
    assert [r["Value"] for r in _steps(mock_hospital, ALICE)] == [str(4200 + i) for i in range(5)]


def test_a_bad_async_write_is_refused_at_once(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    app = gateway.client(SCOPES)
    bad = _reading(4301, ALICE)
    bad["valueQuantity"]["unit"] = bad["valueQuantity"]["code"] = "kg"
    reply = app.post("/Observation", json=bad, headers=ASYNC)
    assert reply.status_code == 422, reply.text
    assert fhir(reply.json())["resourceType"] == "OperationOutcome"
    # A patient-scoped token writes its own patient's data only, asynchronously too.
    bob = gateway.client("patient/Observation.crs", patient=BOB)
    reply = bob.post("/Observation", json=_reading(4302, ALICE), headers=ASYNC)
    assert reply.status_code == 403, reply.text
    reply = bob.post(gateway.base, json=_transaction([_reading(4303, ALICE)]), headers=ASYNC)
    assert reply.status_code == 403, reply.text
    assert _steps(mock_hospital, ALICE) == []


def test_a_refusal_by_the_legacy_system_is_the_final_result(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    app = gateway.client(SCOPES)
    reply = app.post("/Observation", json=_reading(4401, "999999"), headers=ASYNC)
    entry = _result(app, _accepted(reply, gateway), fhir)
    assert entry["response"]["status"] in ("404", "422"), entry
    assert entry["response"]["outcome"]["resourceType"] == "OperationOutcome"


def test_async_writes_wait_out_an_outage_and_keep_each_patients_order(
    outage_gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    gateway = outage_gateway
    app = gateway.client(SCOPES)
    mock_hospital.inject_faults(system="ehr", refuse_seconds=600)
    accepted: list[tuple[str, str, int]] = []
    for i in range(4):
        for mrn in (ALICE, BOB):
            value = 5000 + 10 * i + (mrn == BOB)
            reply = app.post("/Observation", json=_reading(value, mrn, minute=i), headers=ASYNC)
            accepted.append((_accepted(reply, gateway), mrn, value))
    cancelled = _accepted(
        app.post("/Observation", json=_reading(5999, ALICE, minute=9), headers=ASYNC), gateway
    )
    # While the EHR is down, every write is pending, and nothing reaches the EHR.
    for location, _, _ in accepted:
        pending = app.get(location)
        assert pending.status_code == 202, pending.text
        assert int(pending.headers["retry-after"]) >= 1
    assert app.delete(cancelled).status_code == 202
    assert app.get(cancelled).status_code == 404
    assert _steps(mock_hospital, ALICE) == [] and _steps(mock_hospital, BOB) == []
    # The queue's depth and age are in /metrics.
    metrics_url = gateway.base.removesuffix("/fhir") + "/metrics"
    deadline = time.monotonic() + 30
    while "bridge_async_queue_depth 8.0" not in (page := httpx.get(metrics_url).text):
        assert time.monotonic() < deadline, page
        time.sleep(0.1)
    oldest = next(line for line in page.splitlines() if line.startswith("bridge_async_oldest"))
    assert float(oldest.split()[1]) > 0
    mock_hospital.clear_faults()
    for location, _, _ in accepted:
        entry = _result(app, location, fhir, within=90)
        assert entry["response"]["status"].startswith("201"), entry
    for mrn in (ALICE, BOB):
        stored = [int(r["Value"]) for r in _steps(mock_hospital, mrn)]
        assert stored == [value for _, who, value in accepted if who == mrn]


def test_a_killed_gateway_delivers_every_accepted_write_once_after_restart(
    mock_hospital_server: MockHospital, mock_hospital: MockHospital, tmp_path: Path, fhir: Any
) -> None:
    store = {"url": f"sqlite:///{tmp_path / 'shared' / 'store.db'}"}
    extra = {"store": store, "async_writes": FAST}
    # Slow EHR answers: a delivery is under way when the gateway dies.
    mock_hospital.inject_faults(system="ehr", latency_ms=300)
    accepted: list[tuple[str, int]] = []
    with start_gateway(tmp_path / "first", mock_hospital_server.ehr_url, extra=extra) as first:
        app = first.client(SCOPES)
        for i in range(8):
            reply = app.post("/Observation", json=_reading(6000 + i, ALICE, i), headers=ASYNC)
            accepted.append((_accepted(reply, first), 6000 + i))
        readings = [_reading(6100 + i, BOB, minute=i) for i in range(3)]
        reply = app.post(first.base, json=_transaction(readings), headers=ASYNC)
        bundle_location = _accepted(reply, first)
        first.process.kill()  # SIGKILL: no shutdown, leases left behind
        first.process.wait()
    mock_hospital.clear_faults()
    with start_gateway(tmp_path / "second", mock_hospital_server.ehr_url, extra=extra) as second:
        app = second.client(SCOPES)
        for location, _ in accepted:
            moved = location.replace(first.base, second.base)
            entry = _result(app, moved, fhir, within=90)
            assert entry["response"]["status"].startswith("201"), entry
        entry = _result(app, bundle_location.replace(first.base, second.base), fhir, within=90)
        assert entry["resource"]["type"] == "transaction-response"
    assert [int(r["Value"]) for r in _steps(mock_hospital, ALICE)] == [v for _, v in accepted]
    assert [int(r["Value"]) for r in _steps(mock_hospital, BOB)] == [6100, 6101, 6102]


def test_a_stopped_gateway_hands_its_writes_back(
    mock_hospital_server: MockHospital, mock_hospital: MockHospital, tmp_path: Path, fhir: Any
) -> None:
    store = {"url": f"sqlite:///{tmp_path / 'shared' / 'store.db'}"}
    # A delivery cannot finish within the grace: it goes back to the queue, unsure.
    quick_stop = {**FAST, "shutdown_grace": 0.5}
    mock_hospital.inject_faults(system="ehr", latency_ms=3000)
    with start_gateway(
        tmp_path / "first",
        mock_hospital_server.ehr_url,
        extra={"store": store, "async_writes": quick_stop},
    ) as first:
        app = first.client(SCOPES)
        locations = [
            _accepted(app.post("/Observation", json=_reading(v, ALICE, i), headers=ASYNC), first)
            for i, v in enumerate((6500, 6501, 6502))
        ]
        first.stop()  # SIGTERM: a graceful shutdown
        assert "Application shutdown complete" in first.logs()
    mock_hospital.clear_faults()
    # Leases this long would hold the writes for a minute had they not been handed back.
    patient = {**FAST, "lease": 600}
    with start_gateway(
        tmp_path / "second",
        mock_hospital_server.ehr_url,
        extra={"store": store, "async_writes": patient},
    ) as second:
        app = second.client(SCOPES)
        for location in locations:
            entry = _result(app, location.replace(first.base, second.base), fhir, within=30)
            assert entry["response"]["status"].startswith("201"), entry
    assert [int(r["Value"]) for r in _steps(mock_hospital, ALICE)] == [6500, 6501, 6502]


def test_two_gateways_on_one_postgres_store_deliver_each_write_once(
    mock_hospital_server: MockHospital,
    mock_hospital: MockHospital,
    tmp_path: Path,
    postgres_url: str,
    fhir: Any,
) -> None:
    extra = {"store": {"url": postgres_url}, "async_writes": FAST}
    ehr = mock_hospital_server.ehr_url
    with (
        start_gateway(tmp_path / "a", ehr, extra=extra) as one,
        start_gateway(tmp_path / "b", ehr, extra=extra) as two,
    ):
        apps = [one.client(SCOPES), two.client(SCOPES)]
        accepted: list[tuple[httpx.Client, str, str, int]] = []
        for i in range(12):
            app, gateway = apps[i % 2], (one, two)[i % 2]
            mrn = (ALICE, BOB)[i % 3 == 0]
            reply = app.post("/Observation", json=_reading(7000 + i, mrn, i), headers=ASYNC)
            accepted.append((app, _accepted(reply, gateway), mrn, 7000 + i))
        for app, location, _, _ in accepted:
            assert _result(app, location, fhir)["response"]["status"].startswith("201")
        # Either replica answers for the other's write: the queue is shared.
        _, location, _, _ = accepted[0]
        assert apps[1].get(location.replace(one.base, two.base)).status_code == 200
    for mrn in (ALICE, BOB):
        stored = [int(r["Value"]) for r in _steps(mock_hospital, mrn)]
        assert stored == [v for _, _, who, v in accepted if who == mrn]


def test_each_delivery_leaves_an_audit_event(gateway: Gateway, fhir: Any) -> None:
    app = gateway.client(SCOPES)
    reply = app.post("/Observation", json=_reading(4303, ALICE), headers=ASYNC)
    location = _accepted(reply, gateway)
    assert _result(app, location, fhir)["response"]["status"].startswith("201")
    job = location.rsplit("/", 1)[1]
    auditor = gateway.client("user/AuditEvent.rs")
    events = auditor.get("/AuditEvent", params={"patient": ALICE, "_count": 500}).json()
    (delivery,) = [
        e["resource"]
        for e in events["entry"]
        if e["resource"].get("extension", [{}])[0].get("valueString") == f"async-{job}"
    ]
    fhir(delivery)
    assert delivery["subtype"][0]["code"] == "create"
    assert delivery["outcome"] == "0"
    assert delivery["outcomeDesc"] == "HTTP 201"
    assert delivery["agent"][0]["who"]["identifier"]["value"] == "test-app"
    legacy = [d["valueString"] for e in delivery["entity"] for d in e.get("detail", [])]
    assert any(op.startswith("hospital:") for op in legacy)
