"""Allergies and problems from the EHR chart, through its select-patient context.

`GetAllergies` and `GetProblems` answer for whichever patient the session
selected last, so a search must select and ask on one session that nobody
else uses in between: any bleed would show another patient's chart.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import Gateway
from tests.uscore import (
    assert_us_core_allergy,
    assert_us_core_condition,
    assert_us_core_patient,
)

pytestmark = pytest.mark.e2e

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
SCOPES = "user/Patient.rs user/AllergyIntolerance.rs user/Condition.rs"
ALLERGY_STATUS = {"ACTIVE": "active", "INACTIVE": "inactive", "RESOLVED": "resolved"}
PROBLEM_STATUS = {"ACTIVE": "active", "RESOLVED": "resolved", "INACTIVE": "inactive"}


@pytest.fixture(scope="module")
def charts(mock_hospital_server: MockHospital) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Allergies and problems of the first 150 patients, by MRN, as the EHR holds them."""
    return {
        str(mrn): {
            "allergies": mock_hospital_server.get("/ehr/allergies", mrn=str(mrn)),
            "problems": mock_hospital_server.get("/ehr/problems", mrn=str(mrn)),
        }
        for mrn in range(100001, 100151)
    }


@pytest.fixture
def app(gateway: Gateway) -> httpx.Client:
    return gateway.client(SCOPES)


def _date(legacy: str) -> str:
    month, day, year = legacy.split("/")
    return f"{year}-{month}-{day}"


def _search(client: httpx.Client, fhir: Any, path: str, **params: Any) -> list[dict[str, Any]]:
    reply = client.get(path, params=params)
    assert reply.status_code == 200, reply.text
    bundle = fhir(reply.json())
    assert bundle["type"] == "searchset"
    assert not any(x["relation"] == "next" for x in bundle["link"])
    return [e["resource"] for e in bundle.get("entry", [])]


# -- allergies ---------------------------------------------------------------------


def test_allergies_match_the_chart(
    app: httpx.Client, charts: dict[str, dict[str, list[dict[str, Any]]]], fhir: Any
) -> None:
    with_allergies = [m for m, c in charts.items() if len(c["allergies"]) >= 2][:3]
    assert with_allergies
    for mrn in with_allergies:
        legacy = {a["AllergyId"]: a for a in charts[mrn]["allergies"]}
        found = _search(app, fhir, "/AllergyIntolerance", patient=f"Patient/{mrn}")
        assert sorted(a["id"] for a in found) == sorted(legacy)
        for allergy in found:
            assert_us_core_allergy(allergy)
            row = legacy[allergy["id"]]
            assert allergy["patient"] == {"reference": f"Patient/{mrn}"}
            assert allergy["clinicalStatus"]["coding"][0]["code"] == ALLERGY_STATUS[row["Status"]]
            assert allergy["code"]["text"] == row["Substance"]
            assert allergy["recordedDate"] == _date(row["RecordedDate"])
            assert allergy["reaction"][0]["manifestation"][0]["text"] == row["Reaction"]
            assert allergy["reaction"][0]["severity"] == row["Severity"].lower()


def test_allergen_codes_follow_the_table(
    app: httpx.Client, charts: dict[str, dict[str, list[dict[str, Any]]]], fhir: Any
) -> None:
    # docs/mock.md: penicillin is RxNorm 70618, peanut SNOMED CT 762952008.
    expected = {
        "ALG-PCN": ("http://www.nlm.nih.gov/research/umls/rxnorm", "70618"),
        "ALG-PNUT": ("http://snomed.info/sct", "762952008"),
    }
    checked: set[str] = set()
    for mrn, chart in charts.items():
        wanted = {a["AllergyId"]: a["SubstanceCode"] for a in chart["allergies"]}
        if not set(wanted.values()) & (set(expected) - checked):
            continue
        for allergy in _search(app, fhir, "/AllergyIntolerance", patient=mrn):
            local = wanted[allergy["id"]]
            if local in expected:
                coding = allergy["code"]["coding"][0]
                assert (coding["system"], coding["code"]) == expected[local]
                checked.add(local)
    assert checked == set(expected)


def test_patient_without_allergies_gets_an_empty_bundle(
    app: httpx.Client, charts: dict[str, dict[str, list[dict[str, Any]]]], fhir: Any
) -> None:
    mrn = next(m for m, c in charts.items() if not c["allergies"])
    assert _search(app, fhir, "/AllergyIntolerance", patient=mrn) == []


def test_allergies_of_an_unknown_patient(app: httpx.Client, fhir: Any) -> None:
    reply = app.get("/AllergyIntolerance", params={"patient": "999999"})
    assert reply.status_code in (200, 404), reply.text
    body = fhir(reply.json())
    if reply.status_code == 200:
        assert body.get("entry", []) == []


def test_fifty_parallel_allergy_searches_never_bleed(
    gateway: Gateway,
    mock_hospital: MockHospital,
    charts: dict[str, dict[str, list[dict[str, Any]]]],
    fhir: Any,
) -> None:
    with_allergies = [m for m, c in charts.items() if c["allergies"]]
    without = [m for m, c in charts.items() if not c["allergies"]]
    patients = with_allergies[:42] + without[:8]
    assert len(patients) == 50
    expected = {m: sorted(a["AllergyId"] for a in charts[m]["allergies"]) for m in patients}
    headers = {"Authorization": f"Bearer {gateway.token(SCOPES)}"}
    # A little latency keeps every EHR session busy, so requests overlap.
    mock_hospital.inject_faults(system="ehr", latency_ms=20)

    def search(mrn: str) -> tuple[int, dict[str, Any]]:
        reply = httpx.get(
            f"{gateway.base}/AllergyIntolerance",
            params={"patient": f"Patient/{mrn}"},
            headers=headers,
            timeout=30,
        )
        return reply.status_code, reply.json()

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        replies = dict(zip(patients, pool.map(search, patients), strict=True))
    mock_hospital.clear_faults()

    for mrn, (status, bundle) in replies.items():
        assert status == 200, (mrn, bundle)
        fhir(bundle)
        resources = [e["resource"] for e in bundle.get("entry", [])]
        assert sorted(a["id"] for a in resources) == expected[mrn], mrn
        assert {a["patient"]["reference"] for a in resources} <= {f"Patient/{mrn}"}
    stats = mock_hospital.stats()["ehr"]
    assert stats["calls"]["SelectPatient"] >= 50
    assert stats["peak_sessions"] > 1  # the searches did run side by side


# -- problems ------------------------------------------------------------------------


def test_conditions_match_the_problem_list(
    app: httpx.Client, charts: dict[str, dict[str, list[dict[str, Any]]]], fhir: Any
) -> None:
    mrn = max(charts, key=lambda m: len(charts[m]["problems"]))
    legacy = {p["ProblemId"]: p for p in charts[mrn]["problems"]}
    found = _search(app, fhir, "/Condition", patient=f"Patient/{mrn}")
    assert sorted(c["id"] for c in found) == sorted(legacy)
    for condition in found:
        assert_us_core_condition(condition)
        row = legacy[condition["id"]]
        assert condition["code"]["coding"][0]["system"] == ICD10CM
        assert condition["code"]["coding"][0]["code"] == row["ICD10"]
        assert condition["code"]["coding"][0]["display"] == row["Description"]
        assert condition["subject"] == {"reference": f"Patient/{mrn}"}
        assert condition["onsetDateTime"] == _date(row["OnsetDate"])
        assert condition["clinicalStatus"]["coding"][0]["code"] == PROBLEM_STATUS[row["Status"]]
        category = condition["category"][0]["coding"][0]
        assert category["code"] in ("problem-list-item", "health-concern")


def test_sensitive_problems_are_labelled_restricted(
    app: httpx.Client, charts: dict[str, dict[str, list[dict[str, Any]]]], fhir: Any
) -> None:
    mrn = next(
        m
        for m, c in charts.items()
        if {p["Sensitive"] for p in c["problems"]} == {"Y", "N"}  # both kinds
    )
    sensitive = {p["ProblemId"]: p["Sensitive"] == "Y" for p in charts[mrn]["problems"]}
    for condition in _search(app, fhir, "/Condition", patient=mrn):
        labels = [(s["system"], s["code"]) for s in condition.get("meta", {}).get("security", [])]
        if sensitive[condition["id"]]:
            assert (CONFIDENTIALITY, "R") in labels, condition["id"]
        else:
            assert (CONFIDENTIALITY, "R") not in labels, condition["id"]


def test_chart_and_patient_agree(
    app: httpx.Client, charts: dict[str, dict[str, list[dict[str, Any]]]], fhir: Any
) -> None:
    mrn = next(m for m, c in charts.items() if c["allergies"] and c["problems"])
    reply = app.get(f"/Patient/{mrn}")
    assert reply.status_code == 200, reply.text
    patient = fhir(reply.json())
    assert_us_core_patient(patient)
    for path, field in (("/AllergyIntolerance", "patient"), ("/Condition", "subject")):
        for resource in _search(app, fhir, path, patient=mrn):
            assert resource[field]["reference"] == f"Patient/{patient['id']}"


def test_chart_searches_need_a_patient(app: httpx.Client, fhir: Any) -> None:
    for path in ("/AllergyIntolerance", "/Condition"):
        reply = app.get(path)
        assert reply.status_code == 400, path
        assert fhir(reply.json())["issue"][0]["code"] == "invalid"
