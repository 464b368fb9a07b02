"""Values the legacy form cannot take, in synchronous and asynchronous writes.

A dateTime whose legacy local time falls off the calendar (past 9999-12-31 or
before 0001-01-01 in the EHR's zone) is refused like any other bad value:
422 naming the element, at once where the write is checked before its 202,
per entry in a batch, and never a job that blocks the patient's queue.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import Gateway

pytestmark = pytest.mark.e2e

FHIR_JSON = {"Content-Type": "application/fhir+json"}
ASYNC = {**FHIR_JSON, "Prefer": "respond-async"}
SCOPES = "user/Observation.crs"
PATIENT = "100007"
PAST_THE_END = "9999-12-31T23:59:59-14:00"  # 10000-01-01 in New York
BEFORE_THE_START = "0001-01-01T00:00:00+14:00"  # the year 0 in New York
REFUSAL = (
    "Observation.effectiveDateTime: needs a dateTime that falls within the years 0001 to "
    "9999 in the legacy system's time zone (America/New_York)"
)


def _reading(value: int, when: str = "2026-11-24T14:00:00Z") -> dict[str, Any]:
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
        "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "{steps}",
            "system": "http://unitsofmeasure.org",
            "code": "{steps}",
        },
        "device": {"identifier": {"value": "FITBAND-7"}},
    }


def _bundle(kind: str, readings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"resource": r, "request": {"method": "POST", "url": "Observation"}} for r in readings
        ],
    }


def _values(hospital: MockHospital) -> list[str]:
    rows = hospital.get("/ehr/vitals", mrn=PATIENT, type="STEPS")
    return [r["Value"] for r in rows if r.get("DeviceId") == "FITBAND-7"]


def _result(client: httpx.Client, location: str, fhir: Any, within: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while (reply := client.get(location)).status_code == 202:
        assert time.monotonic() < deadline, f"not delivered: {reply.headers['x-progress']}"
        time.sleep(0.1)
    assert reply.status_code == 200, reply.text
    entry: dict[str, Any] = fhir(reply.json())["entry"][0]
    return entry


@pytest.mark.parametrize("when", [PAST_THE_END, BEFORE_THE_START])
def test_a_datetime_off_the_legacy_calendar_is_422_naming_it(
    gateway: Gateway, mock_hospital: MockHospital, when: str, fhir: Any
) -> None:
    app = gateway.client(SCOPES)
    reply = app.post("/Observation", json=_reading(7101, when), headers=FHIR_JSON)
    assert reply.status_code == 422, reply.text
    assert fhir(reply.json())["issue"][0]["diagnostics"] == REFUSAL
    # A transaction fails whole before anything is sent; a batch answers per entry.
    pair = [_reading(7102), _reading(7103, when)]
    reply = app.post(gateway.base, json=_bundle("transaction", pair), headers=FHIR_JSON)
    assert reply.status_code == 422, reply.text
    assert fhir(reply.json())["issue"][0]["diagnostics"] == f"Bundle.entry[1]: {REFUSAL}"
    reply = app.post(gateway.base, json=_bundle("batch", pair), headers=FHIR_JSON)
    assert reply.status_code == 200, reply.text
    first, second = fhir(reply.json())["entry"]
    assert first["response"]["status"].startswith("201")
    assert second["response"]["status"] == "422"
    assert second["response"]["outcome"]["issue"][0]["diagnostics"] == REFUSAL
    # Checked before the 202: refused at once, never queued.
    reply = app.post("/Observation", json=_reading(7104, when), headers=ASYNC)
    assert reply.status_code == 422, reply.text
    reply = app.post(gateway.base, json=_bundle("transaction", pair), headers=ASYNC)
    assert reply.status_code == 422, reply.text
    assert fhir(reply.json())["issue"][0]["diagnostics"] == f"Bundle.entry[1]: {REFUSAL}"
    assert _values(mock_hospital).count("7102") == 1  # the batch's first entry only


def test_an_async_batch_with_a_bad_entry_is_delivered_and_the_queue_moves_on(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    app = gateway.client(SCOPES)
    batch = _bundle("batch", [_reading(7201), _reading(7202, PAST_THE_END)])
    reply = app.post(gateway.base, json=batch, headers=ASYNC)
    assert reply.status_code == 202, reply.text
    first_job = reply.headers["content-location"]
    reply = app.post("/Observation", json=_reading(7203), headers=ASYNC)
    assert reply.status_code == 202, reply.text
    later_job = reply.headers["content-location"]
    answer = _result(app, first_job, fhir)["resource"]
    assert answer["type"] == "batch-response"
    first, second = answer["entry"]
    assert first["response"]["status"].startswith("201")
    assert second["response"]["status"] == "422"
    assert second["response"]["outcome"]["issue"][0]["diagnostics"] == REFUSAL
    assert _result(app, later_job, fhir)["response"]["status"].startswith("201")
    stored = _values(mock_hospital)
    assert (stored.count("7201"), stored.count("7202"), stored.count("7203")) == (1, 0, 1)
    assert "OverflowError" not in gateway.logs()


@pytest.mark.parametrize("url", ["http://[::1", "Observation/123", "fhir"])
def test_an_async_bundle_entry_whose_url_does_not_fit_is_400_before_its_202(
    gateway: Gateway, fhir: Any, url: str
) -> None:
    client = gateway.client(scope=SCOPES)
    bundle = _bundle("batch", [_reading(1)])
    bundle["entry"][0]["request"]["url"] = url
    reply = client.post("", json=bundle, headers=ASYNC)
    assert reply.status_code == 400, reply.text
    assert fhir(reply.json())["issue"][0]["diagnostics"].startswith("Bundle.entry[0].request.url ")
