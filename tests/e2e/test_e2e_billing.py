"""Billing as a billing platform does it: a Claim from the patient's diagnoses, then its status.

The billing system has no session (credentials travel in every body), checks
ICD-10-CM and CPT codes, answers a claim number, and advances a claim's
status with each `GetClaimStatus` query: RECEIVED, IN_REVIEW, then the
outcome (PAID at 80%, or DENIED above 5000.00).
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.bodies import claim
from tests.support import Gateway

pytestmark = pytest.mark.e2e

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
STATUS_URL = "urn:billing-sys:StructureDefinition/claim-status"
STATUSES = {"RECEIVED": "received", "IN_REVIEW": "in-review", "PAID": "paid", "DENIED": "denied"}
FHIR_JSON = "application/fhir+json"
SCOPES = "user/Condition.rs user/Claim.cr"


@pytest.fixture
def app(gateway: Gateway) -> httpx.Client:
    return gateway.client(SCOPES)


@pytest.fixture
def patient_with_problems(mock_hospital: MockHospital) -> str:
    for mrn in range(100001, 100101):
        if len(mock_hospital.get("/ehr/problems", mrn=str(mrn))) >= 2:
            return str(mrn)
    raise AssertionError("no patient in the sample has two problems")


def _diagnosis_codes(client: httpx.Client, fhir: Any, mrn: str) -> list[str]:
    """The patient's ICD-10-CM codes, as an app reads them: from the Condition search."""
    reply = client.get("/Condition", params={"patient": f"Patient/{mrn}"})
    assert reply.status_code == 200, reply.text
    codes = []
    for entry in fhir(reply.json()).get("entry", []):
        for coding in entry["resource"]["code"]["coding"]:
            if coding["system"] == ICD10CM and coding["code"] not in codes:
                codes.append(coding["code"])
    return codes


def _claim(
    mrn: str, encounter: str, diagnoses: list[str], procedures: list[str], amount: float
) -> dict[str, Any]:
    return claim(mrn, encounter, diagnoses, procedures, amount)


def _encounter(mock_hospital: MockHospital) -> str:
    today = date.fromisoformat(mock_hospital.info()["today"])
    return (today - timedelta(days=3)).isoformat()


def _status(claim: dict[str, Any]) -> str:
    (ext,) = [e for e in claim.get("extension", []) if e["url"] == STATUS_URL]
    return str(ext["valueCode"])


def _submit(client: httpx.Client, fhir: Any, body: dict[str, Any]) -> httpx.Response:
    return client.post("/Claim", json=fhir(body), headers={"Content-Type": FHIR_JSON})


def test_claim_from_the_patients_diagnoses_is_recorded(
    app: httpx.Client,
    gateway: Gateway,
    mock_hospital: MockHospital,
    patient_with_problems: str,
    fhir: Any,
) -> None:
    mrn = patient_with_problems
    diagnoses = _diagnosis_codes(app, fhir, mrn)
    assert len(diagnoses) >= 2
    encounter = _encounter(mock_hospital)
    reply = _submit(app, fhir, _claim(mrn, encounter, diagnoses, ["99213", "80061"], 130.00))
    assert reply.status_code == 201, reply.text
    assert reply.headers["content-type"].startswith(FHIR_JSON)
    claim = fhir(reply.json())
    number = claim["id"]
    year = mock_hospital.info()["today"][:4]
    assert re.fullmatch(rf"CLM-{year}-\d{{6}}", number), number
    assert reply.headers["location"].split("/_history/")[0] == f"{gateway.base}/Claim/{number}"
    assert claim["identifier"][0]["value"] == number
    assert claim["patient"] == {"reference": f"Patient/{mrn}"}
    assert [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in claim["diagnosis"]] == (
        diagnoses
    )

    legacy = mock_hospital.get(f"/billing/claims/{number}")
    assert legacy["MRN"] == mrn
    assert legacy["DiagnosisCodes"] == diagnoses
    assert legacy["ProcedureCodes"] == ["99213", "80061"]
    assert legacy["Amount"] == "130.00"
    assert legacy["EncounterDate"] == encounter.replace("-", "")
    assert number in [c["ClaimNumber"] for c in mock_hospital.get("/billing/claims", mrn=mrn)]


def test_claim_read_follows_the_legacy_status(
    app: httpx.Client, mock_hospital: MockHospital, patient_with_problems: str, fhir: Any
) -> None:
    mrn = patient_with_problems
    body = _claim(mrn, _encounter(mock_hospital), _diagnosis_codes(app, fhir, mrn), ["99214"], 250)
    reply = _submit(app, fhir, body)
    assert reply.status_code == 201, reply.text
    created = fhir(reply.json())
    number = created["id"]
    seen = [_status(created)] if "extension" in created else []
    queries = mock_hospital.get(f"/billing/claims/{number}")["StatusQueries"]
    for _ in range(4):
        reply = app.get(f"/Claim/{number}")
        assert reply.status_code == 200, reply.text
        claim = fhir(reply.json())
        legacy = mock_hospital.get(f"/billing/claims/{number}")
        assert legacy["StatusQueries"] == queries + 1  # each read asks billing once
        queries = legacy["StatusQueries"]
        assert _status(claim) == STATUSES[legacy["Status"]]
        assert claim["id"] == number
        assert claim["total"]["value"] == 250
        seen.append(_status(claim))
    # RECEIVED, IN_REVIEW, then the outcome: 250.00 is paid.
    order = ["received", "in-review", "paid"]
    assert seen == sorted(seen, key=order.index)
    assert {"in-review", "paid"} <= set(seen)
    assert seen[-2:] == ["paid", "paid"]
    assert mock_hospital.get(f"/billing/claims/{number}")["PaidAmount"] == "200.00"


def test_claim_above_five_thousand_is_denied(
    app: httpx.Client, mock_hospital: MockHospital, patient_with_problems: str, fhir: Any
) -> None:
    mrn = patient_with_problems
    body = _claim(mrn, _encounter(mock_hospital), _diagnosis_codes(app, fhir, mrn), ["99215"], 6000)
    reply = _submit(app, fhir, body)
    assert reply.status_code == 201, reply.text
    number = reply.json()["id"]
    statuses = [_status(fhir(app.get(f"/Claim/{number}").json())) for _ in range(3)]
    assert statuses[-1] == "denied"
    assert mock_hospital.get(f"/billing/claims/{number}")["Status"] == "DENIED"


@pytest.mark.parametrize(
    ("diagnoses", "procedures"),
    [(["I10", "I10.1"], ["99213"]), (["I10"], ["00000"])],
)
def test_claim_with_an_invalid_code_is_422_and_not_recorded(
    app: httpx.Client,
    mock_hospital: MockHospital,
    patient_with_problems: str,
    fhir: Any,
    diagnoses: list[str],
    procedures: list[str],
) -> None:
    mrn = patient_with_problems
    before = mock_hospital.get("/billing/claims", mrn=mrn)
    body = _claim(mrn, _encounter(mock_hospital), diagnoses, procedures, 95)
    reply = _submit(app, fhir, body)
    assert reply.status_code == 422, reply.text
    assert reply.headers["content-type"].startswith(FHIR_JSON)
    outcome = fhir(reply.json())
    assert outcome["issue"][0]["code"] == "code-invalid"
    assert "I10.1" not in reply.text  # no legacy fault text passed on
    assert mock_hospital.get("/billing/claims", mrn=mrn) == before
    assert mock_hospital.stats()["billing"]["faults"] == {"BILL-CODE": 1}


def test_claim_without_diagnoses_is_422(
    app: httpx.Client, mock_hospital: MockHospital, patient_with_problems: str, fhir: Any
) -> None:
    body = _claim(patient_with_problems, _encounter(mock_hospital), [], ["99213"], 95)
    del body["diagnosis"]
    reply = _submit(app, fhir, body)
    assert reply.status_code == 422, reply.text
    fhir(reply.json())
    assert "SubmitClaim" not in mock_hospital.stats()["billing"]["calls"] or (
        mock_hospital.stats()["billing"]["faults"].get("BILL-NO-DX") == 1
    )


def test_claim_read_of_an_unknown_number_is_404(app: httpx.Client, fhir: Any) -> None:
    reply = app.get("/Claim/CLM-2026-999999")
    assert reply.status_code == 404
    assert fhir(reply.json())["issue"][0]["code"] == "not-found"
