"""batch and transaction Bundles, and _revinclude, through the real gateway."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.mock import MockHospital
from tests.support import Gateway

pytestmark = pytest.mark.e2e

LOINC = {"WT": ("29463-7", "kg"), "HR": ("8867-4", "/min"), "STEPS": ("55423-8", "{steps}")}


def _reading(
    kind: str, value: float, mrn: str = "100003", unit: str | None = None
) -> dict[str, Any]:
    code, ucum = LOINC[kind]
    return {
        "resource": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{mrn}"},
            "effectiveDateTime": "2026-11-24T14:30:00Z",
            "valueQuantity": {
                "value": value,
                "unit": unit or ucum,
                "system": "http://unitsofmeasure.org",
                "code": unit or ucum,
            },
        },
        "request": {"method": "POST", "url": "Observation"},
    }


def _post(gateway: Gateway, kind: str, entries: list[dict[str, Any]]) -> Any:
    body = {"resourceType": "Bundle", "type": kind, "entry": entries}
    return gateway.client("user/*.*").post(
        gateway.base, json=body, headers={"Content-Type": "application/fhir+json"}
    )


def _vitals_calls(mock: MockHospital) -> int:
    return int(mock.stats()["ehr"]["calls"].get("RecordVitals", 0))


@pytest.fixture
def warm(gateway: Gateway) -> None:
    """A logged-in EHR session (the reset before each test dropped the old one)."""
    assert gateway.client().get("/Patient/100003").status_code == 200


def test_transaction_of_readings_is_one_legacy_call(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, warm: None
) -> None:
    entries = [_reading("HR", 60 + i) for i in range(40)] + [_reading("WT", 70)]
    reply = _post(gateway, "transaction", entries)
    assert reply.status_code == 200, reply.text
    bundle = fhir(reply.json())
    assert bundle["type"] == "transaction-response"
    assert [e["response"]["status"] for e in bundle["entry"]] == ["201 Created"] * 41
    ids = [e["resource"]["id"] for e in bundle["entry"]]
    assert len(set(ids)) == 41
    assert all("outcome" not in e["response"] for e in bundle["entry"])
    assert _vitals_calls(mock_hospital) == 1
    stored = mock_hospital.get("/_mock/ehr/vitals", mrn="100003")
    stored_ids = {r["ReadingId"] for r in stored}
    assert set(ids) <= stored_ids


def test_transaction_with_an_unconvertible_entry_stores_nothing(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, warm: None
) -> None:
    before = len(mock_hospital.get("/_mock/ehr/vitals", mrn="100003"))
    entries = [_reading("HR", 61), _reading("WT", 70, unit="m")]
    reply = _post(gateway, "transaction", entries)
    assert reply.status_code == 422
    outcome = fhir(reply.json())
    assert outcome["issue"][0]["diagnostics"].startswith(
        "Bundle.entry[1]: Observation.valueQuantity"
    )
    assert _vitals_calls(mock_hospital) == 0
    assert len(mock_hospital.get("/_mock/ehr/vitals", mrn="100003")) == before


def test_transaction_that_needs_several_calls_says_it_was_not_atomic(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, warm: None
) -> None:
    entries = [_reading("HR", 61, mrn="100003"), _reading("HR", 62, mrn="100004")]
    bundle = fhir(_post(gateway, "transaction", entries).json())
    assert [e["response"]["status"] for e in bundle["entry"]] == ["201 Created"] * 2
    for entry in bundle["entry"]:
        issue = entry["response"]["outcome"]["issue"][0]
        assert issue["severity"] == "warning"
        assert "could not apply this transaction atomically" in issue["diagnostics"]
    assert _vitals_calls(mock_hospital) == 2


def test_batch_entries_fail_alone(gateway: Gateway, mock_hospital: MockHospital, fhir: Any) -> None:
    entries = [
        _reading("HR", 61),
        _reading("WT", 70, unit="m"),
        {"request": {"method": "GET", "url": "Patient/100003"}},
        {"request": {"method": "GET", "url": "Patient/999999"}},
        {"request": {"method": "GET", "url": "Spaceship/1"}},
    ]
    reply = _post(gateway, "batch", entries)
    assert reply.status_code == 200
    bundle = fhir(reply.json())
    assert bundle["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in bundle["entry"]]
    assert statuses == ["201 Created", "422", "200 OK", "404", "404"]
    assert bundle["entry"][2]["resource"]["id"] == "100003"
    assert bundle["entry"][1]["response"]["outcome"]["issue"][0]["code"] == "processing"


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Patient"},
        {"resourceType": "Bundle", "type": "collection"},
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {}}]},
    ],
)
def test_malformed_bundles_are_400(gateway: Gateway, fhir: Any, body: dict[str, Any]) -> None:
    reply = gateway.client("user/*.*").post(
        gateway.base, json=body, headers={"Content-Type": "application/fhir+json"}
    )
    assert reply.status_code == 400
    fhir(reply.json())


def test_bundle_entries_are_authorized_one_by_one(gateway: Gateway, fhir: Any) -> None:
    body = {"resourceType": "Bundle", "type": "batch", "entry": [_reading("HR", 61)]}
    reply = gateway.client("user/*.read").post(
        gateway.base, json=body, headers={"Content-Type": "application/fhir+json"}
    )
    assert reply.status_code == 200
    assert fhir(reply.json())["entry"][0]["response"]["status"] == "403"


def test_revinclude_brings_resources_that_refer_to_the_patient(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    allergies = {a["AllergyId"] for a in mock_hospital.get("/_mock/ehr/allergies", mrn="100002")}
    reply = gateway.client().get(
        "/Patient", params={"_id": "100002", "_revinclude": "AllergyIntolerance:patient"}
    )
    bundle = fhir(reply.json())
    included = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert {r["id"] for r in included} == allergies
    assert all(r["patient"]["reference"] == "Patient/100002" for r in included)
    unknown = gateway.client().get("/Patient", params={"_revinclude": "Slot:schedule"})
    assert unknown.status_code == 400


def test_revincluded_types_need_their_own_scope(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client("user/Patient.rs").get(
        "/Patient", params={"_id": "100002", "_revinclude": "AllergyIntolerance:patient"}
    )
    bundle = fhir(reply.json())
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Patient"]


def test_batch_of_readings_is_one_legacy_call_unless_one_is_refused(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, warm: None
) -> None:
    good = [_reading("HR", 60 + i) for i in range(20)]
    bundle = fhir(_post(gateway, "batch", good).json())
    assert [e["response"]["status"] for e in bundle["entry"]] == ["201 Created"] * 20
    assert _vitals_calls(mock_hospital) == 1
    # A fractional step count passes FHIR and the mapping but the EHR refuses it,
    # and the EHR refuses a whole call: each entry is then tried on its own.
    mixed = [_reading("HR", 61), _reading("STEPS", 8000.5), _reading("HR", 62)]
    bundle = fhir(_post(gateway, "batch", mixed).json())
    assert [e["response"]["status"] for e in bundle["entry"]] == [
        "201 Created",
        "422",
        "201 Created",
    ]
    assert _vitals_calls(mock_hospital) == 1 + 1 + 3


def test_patient_scope_writes_only_its_own_patient(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, warm: None
) -> None:
    client = gateway.client("patient/Observation.cruds", patient="100003")
    own = _reading("HR", 61, mrn="100003")["resource"]
    other = _reading("HR", 62, mrn="100004")["resource"]
    headers = {"Content-Type": "application/fhir+json"}
    assert client.post("/Observation", json=own, headers=headers).status_code == 201
    refused = client.post("/Observation", json=other, headers=headers)
    assert refused.status_code == 403
    assert fhir(refused.json())["issue"][0]["code"] == "forbidden"
    body = {"resourceType": "Bundle", "type": "batch", "entry": [_reading("HR", 63, mrn="100004")]}
    batch = fhir(client.post(gateway.base, json=body, headers=headers).json())
    assert batch["entry"][0]["response"]["status"] == "403"
    assert _vitals_calls(mock_hospital) == 1  # only the patient's own reading was written


def _send(client: Any, kind: str, entries: list[Any], key: str | None = None) -> Any:
    headers = {"Content-Type": "application/fhir+json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    body = {"resourceType": "Bundle", "type": kind, "entry": entries}
    return client.post("/", json=body, headers=headers)


def _stored(mock: MockHospital, mrn: str = "100003") -> int:
    return len(mock.get("/_mock/ehr/vitals", mrn=mrn))


def test_batch_with_a_malformed_entry_answers_it_alone_and_stores_once(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, warm: None
) -> None:
    client = gateway.client("patient/Observation.c", patient="100003")
    entries = [_reading("HR", 61), None, {"request": {"method": "GET", "url": "http://[::1"}}]
    before = _stored(mock_hospital)

    first = _send(client, "batch", entries, key="batch-with-a-null-entry")
    again = _send(client, "batch", entries, key="batch-with-a-null-entry")

    assert first.status_code == 200, first.text
    bundle = fhir(first.json())
    assert [e["response"]["status"] for e in bundle["entry"]] == ["201 Created", "400", "400"]
    assert [e["response"]["outcome"]["issue"][0]["code"] for e in bundle["entry"][1:]] == [
        "invalid",
        "invalid",
    ]
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert _stored(mock_hospital) == before + 1


def test_batch_search_by_a_base_relative_url_is_read_as_the_gateway_reads_it(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, warm: None
) -> None:
    client = gateway.client("patient/Observation.c patient/Patient.rs", patient="100003")
    entries = [_reading("HR", 61), {"request": {"method": "GET", "url": "fhir/Patient?_id=100003"}}]
    before = _stored(mock_hospital)

    first = _send(client, "batch", entries, key="batch-with-a-base-relative-search")
    again = _send(client, "batch", entries, key="batch-with-a-base-relative-search")

    assert first.status_code == 200, first.text
    bundle = fhir(first.json())
    assert [e["response"]["status"] for e in bundle["entry"]] == ["201 Created", "200 OK"]
    assert [e["resource"]["id"] for e in bundle["entry"][1]["resource"]["entry"]] == ["100003"]
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert _stored(mock_hospital) == before + 1


def test_search_entry_for_another_patient_is_refused_before_anything_runs(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, warm: None
) -> None:
    client = gateway.client("patient/Observation.crs patient/Patient.rs", patient="100003")
    other = {"request": {"method": "GET", "url": "Observation?patient=100004&_count=1"}}
    before = _stored(mock_hospital)
    lab = mock_hospital.stats()["lab"]["calls"]

    batch = _send(client, "batch", [_reading("HR", 61), other])
    transaction = _send(client, "transaction", [_reading("HR", 62), other])

    assert batch.status_code == 200, batch.text
    statuses = [e["response"]["status"] for e in fhir(batch.json())["entry"]]
    assert statuses == ["201 Created", "403"]
    assert transaction.status_code == 403, transaction.text
    assert fhir(transaction.json())["issue"][0]["code"] == "forbidden"
    assert _stored(mock_hospital) == before + 1  # the batch's reading only
    assert mock_hospital.stats()["lab"]["calls"] == lab


def test_transaction_read_of_another_patient_is_refused_before_its_writes(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, warm: None
) -> None:
    # Reads run last in a transaction (FHIR's order): a refusal then came after the
    # writes were applied, inside a 200. It is now refused before anything is sent.
    client = gateway.client("patient/Observation.crs patient/Patient.rs", patient="100003")
    before = _stored(mock_hospital)
    other = {"request": {"method": "GET", "url": "Patient/100004"}}
    refused = _send(client, "transaction", [_reading("HR", 63), other])
    assert refused.status_code == 403, refused.text
    assert fhir(refused.json())["issue"][0]["diagnostics"].startswith("Bundle.entry[1]: ")
    assert _stored(mock_hospital) == before
    own = {"request": {"method": "GET", "url": "Patient/100003"}}
    done = _send(client, "transaction", [_reading("HR", 64), own])
    assert done.status_code == 200, done.text
    entries = fhir(done.json())["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created", "200 OK"]
    assert entries[1]["resource"]["id"] == "100003"
    assert _stored(mock_hospital) == before + 1


@pytest.mark.parametrize(
    "entry",
    [
        None,
        {"request": {"method": "GET", "url": "http://[::1"}},
        {"request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "PUT", "url": "Observation"}, "resource": {}},
        {"request": {"method": "DELETE", "url": "Observation?code=8867-4"}},
    ],
)
def test_transaction_with_a_malformed_entry_is_400_and_applies_nothing(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, warm: None, entry: Any
) -> None:
    before = _stored(mock_hospital)

    reply = _send(gateway.client("user/*.*"), "transaction", [_reading("HR", 61), entry])

    assert reply.status_code == 400, reply.text
    outcome = fhir(reply.json())
    assert outcome["issue"][0]["code"] == "invalid"
    assert outcome["issue"][0]["diagnostics"].startswith("Bundle.entry[1]")
    assert _stored(mock_hospital) == before
