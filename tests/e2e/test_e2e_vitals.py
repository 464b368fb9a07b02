"""Wearable readings written into the EHR's vitals: steps, heart rate, body weight.

FHIR speaks UCUM and instants with offsets; the EHR stores weight in pounds
(`LB`), its own type codes (`STEPS`, `HR`, `WT`) and New York wall-clock
time without an offset (`MM/DD/YYYY HH:MM:SS`). `RecordVitals` is all or
nothing.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import Gateway
from tests.uscore import assert_us_core_vital_signs

pytestmark = pytest.mark.e2e

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
FHIR_JSON = "application/fhir+json"
SCOPES = "user/Observation.crs"
MRN = "100007"
STEPS, HEART_RATE, WEIGHT = "55423-8", "8867-4", "29463-7"


def _reading(
    code: str,
    value: float,
    unit: str,
    when: str = "2026-11-24T14:30:00Z",
    mrn: str = MRN,
    device: str | None = None,
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                        "display": "Vital Signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{mrn}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }
    if device:
        obs["device"] = {"identifier": {"value": device}}
    return obs


@pytest.fixture
def app(gateway: Gateway) -> httpx.Client:
    return gateway.client(SCOPES)


def _post(client: httpx.Client, fhir: Any, obs: dict[str, Any]) -> httpx.Response:
    return client.post("/Observation", json=fhir(obs), headers={"Content-Type": FHIR_JSON})


def _stored(hospital: MockHospital, reading_id: str, mrn: str = MRN) -> dict[str, Any]:
    rows: list[dict[str, Any]] = [
        r for r in hospital.get("/ehr/vitals", mrn=mrn) if r["ReadingId"] == reading_id
    ]
    assert len(rows) == 1, f"{reading_id} is not stored for {mrn}"
    return rows[0]


@pytest.mark.parametrize(
    ("code", "value", "unit", "legacy_type", "legacy_value", "legacy_unit"),
    [
        (STEPS, 8500, "{steps}", "STEPS", "8500", "steps"),
        (HEART_RATE, 72, "/min", "HR", "72", "/min"),
        (WEIGHT, 70, "kg", "WT", "154.32", "LB"),  # 70 / 0.45359237 = 154.3236...
        (WEIGHT, 165.5, "[lb_av]", "WT", "165.5", "LB"),
        (WEIGHT, 70500, "g", "WT", "155.43", "LB"),
    ],
)
def test_reading_is_stored_in_legacy_units(
    app: httpx.Client,
    gateway: Gateway,
    mock_hospital: MockHospital,
    fhir: Any,
    code: str,
    value: float,
    unit: str,
    legacy_type: str,
    legacy_value: str,
    legacy_unit: str,
) -> None:
    obs = _reading(code, value, unit)
    assert_us_core_vital_signs(obs)
    reply = _post(app, fhir, obs)
    assert reply.status_code == 201, reply.text
    assert reply.headers["content-type"].startswith(FHIR_JSON)
    created = fhir(reply.json())
    assert_us_core_vital_signs(created)
    reading_id = created["id"]
    assert reply.headers["location"].split("/_history/")[0] == (
        f"{gateway.base}/Observation/{reading_id}"
    )
    assert created["code"]["coding"][0]["code"] == code
    stored = _stored(mock_hospital, reading_id)
    assert stored["TypeCode"] == legacy_type
    assert stored["Unit"] == legacy_unit
    assert Decimal(stored["Value"]) == Decimal(legacy_value)
    assert stored["TakenAt"] == "11/24/2026 09:30:00"  # 14:30Z is 09:30 in New York (EST)


@pytest.mark.parametrize(
    ("when", "taken_at"),
    [
        ("2026-11-24T14:30:00Z", "11/24/2026 09:30:00"),  # EST, -05:00
        ("2026-07-01T14:00:00Z", "07/01/2026 10:00:00"),  # EDT, -04:00
        ("2026-07-01T10:00:00-04:00", "07/01/2026 10:00:00"),  # already New York time
        ("2026-11-24T15:30:00+01:00", "11/24/2026 09:30:00"),  # another zone
        ("2026-03-08T07:15:00Z", "03/08/2026 03:15:00"),  # just after the spring-forward gap
        ("2026-11-25T03:30:00Z", "11/24/2026 22:30:00"),  # the day before, in New York
    ],
)
def test_reading_time_is_stored_as_new_york_wall_clock(
    app: httpx.Client, mock_hospital: MockHospital, fhir: Any, when: str, taken_at: str
) -> None:
    reply = _post(app, fhir, _reading(HEART_RATE, 64, "/min", when=when))
    assert reply.status_code == 201, reply.text
    assert _stored(mock_hospital, fhir(reply.json())["id"])["TakenAt"] == taken_at


def test_device_id_is_stored(app: httpx.Client, mock_hospital: MockHospital, fhir: Any) -> None:
    reply = _post(app, fhir, _reading(STEPS, 12034, "{steps}", device="FITBAND-0042"))
    assert reply.status_code == 201, reply.text
    stored = _stored(mock_hospital, fhir(reply.json())["id"])
    assert stored["DeviceId"] == "FITBAND-0042"
    assert stored["Value"] == "12034"


@pytest.mark.parametrize(
    ("code", "value", "unit"),
    [(WEIGHT, 1.8, "m"), (HEART_RATE, 72, "kg"), (WEIGHT, 70, "{steps}")],
)
def test_unit_that_cannot_convert_is_422_and_nothing_is_stored(
    app: httpx.Client, mock_hospital: MockHospital, fhir: Any, code: str, value: float, unit: str
) -> None:
    before = mock_hospital.get("/ehr/vitals", mrn=MRN)
    reply = _post(app, fhir, _reading(code, value, unit))
    assert reply.status_code == 422, reply.text
    assert reply.headers["content-type"].startswith(FHIR_JSON)
    fhir(reply.json())
    assert mock_hospital.get("/ehr/vitals", mrn=MRN) == before
    assert "RecordVitals" not in mock_hospital.stats()["ehr"]["calls"]


def test_reading_for_an_unknown_patient_is_refused(
    app: httpx.Client, mock_hospital: MockHospital, fhir: Any
) -> None:
    reply = _post(app, fhir, _reading(HEART_RATE, 70, "/min", mrn="999999"))
    assert reply.status_code in (404, 422), reply.text
    fhir(reply.json())


# -- many readings at once (issue 4, workflow 6) ------------------------------------------


def _bundle(kind: str, readings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
                "resource": r,
                "request": {"method": "POST", "url": "Observation"},
            }
            for i, r in enumerate(readings, 1)
        ],
    }


def _id_from(response: dict[str, Any]) -> str:
    """The id in an entry's response.location (`Observation/VS1` or a full URL)."""
    return str(response["location"]).split("Observation/", 1)[1].split("/", 1)[0]


def _post_bundle(client: httpx.Client, fhir: Any, bundle: dict[str, Any]) -> httpx.Response:
    return client.post(
        f"{client.base_url}".rstrip("/"), json=fhir(bundle), headers={"Content-Type": FHIR_JSON}
    )


def test_batch_answers_every_entry_and_a_bad_one_sinks_nothing(
    app: httpx.Client, mock_hospital: MockHospital, fhir: Any
) -> None:
    readings = [
        _reading(HEART_RATE, 61, "/min", when="2026-11-24T12:00:00Z"),
        _reading(WEIGHT, 1.8, "m", when="2026-11-24T12:01:00Z"),  # cannot convert
        _reading(WEIGHT, 80, "kg", when="2026-11-24T12:02:00Z"),
        _reading(STEPS, 4000, "{steps}", when="2026-11-24T12:03:00Z"),
    ]
    reply = _post_bundle(app, fhir, _bundle("batch", readings))
    assert reply.status_code == 200, reply.text
    answer = fhir(reply.json())
    assert answer["type"] == "batch-response"
    statuses = [e["response"]["status"].split()[0] for e in answer["entry"]]
    assert statuses == ["201", "422", "201", "201"]
    assert answer["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    ids = [_id_from(e["response"]) for e in answer["entry"] if "location" in e["response"]]
    stored = [_stored(mock_hospital, i) for i in ids]
    assert [(s["TypeCode"], s["Value"]) for s in stored] == [
        ("HR", "61"),
        ("WT", "176.37"),  # 80 kg
        ("STEPS", "4000"),
    ]


def test_transaction_stores_every_reading(
    app: httpx.Client, mock_hospital: MockHospital, fhir: Any
) -> None:
    readings = [
        _reading(HEART_RATE, 58 + i, "/min", when=f"2026-11-24T1{i}:00:00Z") for i in range(5)
    ]
    reply = _post_bundle(app, fhir, _bundle("transaction", readings))
    assert reply.status_code == 200, reply.text
    answer = fhir(reply.json())
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"].split()[0] for e in answer["entry"]] == ["201"] * 5
    for i, entry in enumerate(answer["entry"]):
        stored = _stored(mock_hospital, _id_from(entry["response"]))
        assert (stored["TypeCode"], stored["Value"]) == ("HR", str(58 + i))
        assert stored["TakenAt"] == f"11/24/2026 0{5 + i}:00:00"


def test_transaction_with_a_bad_reading_stores_nothing(
    app: httpx.Client, mock_hospital: MockHospital, fhir: Any
) -> None:
    before = mock_hospital.get("/ehr/vitals", mrn=MRN)
    readings = [
        _reading(HEART_RATE, 61, "/min"),
        _reading(WEIGHT, 1.8, "m"),  # cannot convert
        _reading(STEPS, 4000, "{steps}"),
    ]
    reply = _post_bundle(app, fhir, _bundle("transaction", readings))
    assert 400 <= reply.status_code < 500, reply.text
    assert fhir(reply.json())["resourceType"] == "OperationOutcome"
    assert mock_hospital.get("/ehr/vitals", mrn=MRN) == before


def test_transaction_the_ehr_fails_is_its_mapped_error_and_stores_nothing(
    app: httpx.Client, mock_hospital: MockHospital, fhir: Any
) -> None:
    # Found by the soak test: a mapped legacy fault in a transaction was a 500.
    before = mock_hospital.get("/ehr/vitals", mrn=MRN)
    mock_hospital.inject_faults(system="ehr", fault_rate=1.0)
    readings = [
        _reading(HEART_RATE, 60 + i, "/min", when=f"2026-11-24T1{i}:00:00Z") for i in range(3)
    ]
    reply = _post_bundle(app, fhir, _bundle("transaction", readings))
    assert reply.status_code == 502, reply.text
    issue = fhir(reply.json())["issue"][0]
    assert (issue["code"], issue["diagnostics"]) == (
        "exception",
        "The transaction failed at entry[0], entry[1], entry[2]: "
        "The EHR reported an internal error.",
    )
    mock_hospital.clear_faults()
    assert mock_hospital.get("/ehr/vitals", mrn=MRN) == before
