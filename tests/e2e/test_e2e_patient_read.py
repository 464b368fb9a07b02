"""Patient read through the real gateway and the real mock EHR."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.mock import MockHospital
from tests.support import Gateway

pytestmark = pytest.mark.e2e

FHIR_JSON = "application/fhir+json"


def _expected_birth_date(dob: str) -> str:
    month, day, year = dob.split("/")
    return f"{year}-{month}-{day}"


def test_read_patient_matches_legacy_record(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    raw = mock_hospital.sample_patients(1)[0]
    reply = gateway.client().get(f"/Patient/{raw['MRN']}")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith(FHIR_JSON)
    patient = fhir(reply.json())
    last, first, *rest = raw["Name"].split("^")
    assert patient["id"] == raw["MRN"]
    assert patient["identifier"][0]["value"] == raw["MRN"]
    assert patient["identifier"][0]["system"] == "urn:oid:2.16.840.1.113883.3.7777.1"
    assert patient["name"][0]["family"] == last
    assert patient["name"][0]["given"] == [g for g in [first, *rest] if g]
    assert patient["birthDate"] == _expected_birth_date(raw["DOB"])
    assert patient["gender"] == {"M": "male", "F": "female", "U": "unknown"}[raw["Sex"]]


def test_read_maps_codes_through_tables(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    records = mock_hospital.sample_patients(200)
    spanish = next(r for r in records if r.get("Language") == "SPA")
    married = next(r for r in records if r.get("MaritalStatus") == "MAR")
    client = gateway.client()
    lang = fhir(client.get(f"/Patient/{spanish['MRN']}").json())["communication"][0]
    assert lang["language"]["coding"][0] == {
        "system": "urn:ietf:bcp:47",
        "code": "es",
        "display": "Spanish",
    }
    marital = fhir(client.get(f"/Patient/{married['MRN']}").json())["maritalStatus"]
    assert marital["coding"][0]["code"] == "M"
    assert marital["coding"][0]["system"] == (
        "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
    )


def test_read_deceased_patients(gateway: Gateway, mock_hospital: MockHospital, fhir: Any) -> None:
    records = mock_hospital.sample_patients(2000)
    with_date = next(r for r in records if r.get("DeceasedFlag") == "Y" and r.get("DeceasedDate"))
    without = next(r for r in records if r.get("DeceasedFlag") == "Y" and not r.get("DeceasedDate"))
    client = gateway.client()
    dead = fhir(client.get(f"/Patient/{with_date['MRN']}").json())
    assert dead["deceasedDateTime"] == _expected_birth_date(with_date["DeceasedDate"])
    assert "deceasedBoolean" not in dead
    assert fhir(client.get(f"/Patient/{without['MRN']}").json())["deceasedBoolean"] is True


def test_read_unknown_mrn_is_404_outcome(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client().get("/Patient/999999")
    assert reply.status_code == 404
    outcome = fhir(reply.json())
    assert outcome["issue"][0]["code"] == "not-found"
    assert "999999" not in reply.text  # the legacy fault text is never passed on


def test_read_id_that_cannot_be_an_mrn_is_404_without_a_legacy_call(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    reply = gateway.client().get("/Patient/not-an-mrn")
    assert reply.status_code == 404
    fhir(reply.json())
    assert mock_hospital.stats()["ehr"]["calls"].get("GetPatient", 0) == 0


@pytest.mark.parametrize("rid", ["a%20b", "x" * 65, "%C3%A9", "a%00b", "a'b"])
def test_read_malformed_id_is_400(gateway: Gateway, fhir: Any, rid: str) -> None:
    reply = gateway.client().get(f"/Patient/{rid}")
    assert reply.status_code == 400
    assert fhir(reply.json())["issue"][0]["code"] == "invalid"


def test_read_unknown_resource_type_is_404(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client().get("/Spaceship/1")
    assert reply.status_code == 404
    assert fhir(reply.json())["issue"][0]["code"] == "not-supported"


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"_format": "xml"}, {}),
        ({"_format": "application/fhir+xml"}, {"Accept": FHIR_JSON}),
        ({}, {"Accept": "application/fhir+xml"}),
        ({}, {"Accept": "text/html"}),
    ],
)
def test_read_in_a_format_other_than_json_is_406(
    gateway: Gateway, fhir: Any, params: dict[str, str], headers: dict[str, str]
) -> None:
    reply = gateway.client().get("/Patient/100001", params=params, headers=headers)
    assert reply.status_code == 406
    assert reply.headers["content-type"].startswith(FHIR_JSON)
    fhir(reply.json())


@pytest.mark.parametrize("accept", ["application/json", "*/*", f"{FHIR_JSON};q=0.9"])
def test_read_accepts_json_media_types(gateway: Gateway, accept: str) -> None:
    assert gateway.client().get("/Patient/100001", headers={"Accept": accept}).status_code == 200


def test_read_other_methods_are_405(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client().delete("/Patient/100001")
    assert reply.status_code == 405
    fhir(reply.json())


def test_read_without_token_is_401(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.anonymous().get("/Patient/100001")
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert fhir(reply.json())["issue"][0]["code"] == "login"


def test_read_with_a_scope_for_another_type_is_403(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client("user/Observation.read").get("/Patient/100001")
    assert reply.status_code == 403
    assert fhir(reply.json())["issue"][0]["code"] == "forbidden"


def test_read_with_patient_scope_sees_only_its_patient(gateway: Gateway) -> None:
    client = gateway.client("patient/Patient.rs", patient="100001")
    assert client.get("/Patient/100001").status_code == 200
    assert client.get("/Patient/100002").status_code == 403


def test_metadata_lists_exactly_what_the_mapping_declares(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.anonymous().get("/metadata")
    assert reply.status_code == 200
    cap = fhir(reply.json())
    assert cap["fhirVersion"] == "4.0.1"
    assert cap["format"] == ["json"]
    served = {r["type"]: [i["code"] for i in r["interaction"]] for r in cap["rest"][0]["resource"]}
    assert served == {
        # The gateway's own resources, kept in its store.
        "AuditEvent": ["read", "search-type"],
        "Consent": ["read", "search-type", "create", "update", "delete"],
        "AllergyIntolerance": ["search-type"],
        "Appointment": ["search-type", "create", "update", "patch"],  # PATCH goes with update
        "Claim": ["read", "create"],
        "Condition": ["search-type"],
        "DiagnosticReport": ["read", "search-type"],
        "MedicationRequest": ["search-type"],
        "Observation": ["search-type", "create"],
        "Patient": ["read", "search-type"],
        "Practitioner": ["read", "search-type"],
        "Slot": ["search-type"],
    }
    patient = next(r for r in cap["rest"][0]["resource"] if r["type"] == "Patient")
    assert [i["code"] for i in patient["interaction"]] == ["read", "search-type"]
    assert {p["name"]: p["type"] for p in patient["searchParam"]} == {
        "family": "string",
        "given": "string",
        "birthdate": "date",
        "gender": "token",
        "identifier": "token",
        "_id": "token",
    }
