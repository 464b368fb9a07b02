"""Granular SMART v2 scopes end to end, against the lab's Observation and DiagnosticReport.

A search under `Observation.rs?category=...` answers only the matching
Observations, a read of a resource outside the restriction is 403, included
resources and batch entries follow the same rule, several grants combine as a
union, `system/` scopes need no patient, and a restriction the gateway cannot
apply makes the token refused.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import Gateway

pytestmark = pytest.mark.e2e

PATIENT = "100002"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LAB = f"patient/Observation.rs?category={OBS_CATEGORY}|laboratory"
VITALS = f"patient/Observation.rs?category={OBS_CATEGORY}|vital-signs"
REPORT_LAB = (
    "patient/DiagnosticReport.rs?category=http://terminology.hl7.org/CodeSystem/v2-0074|LAB"
)
REPORT_RAD = (
    "patient/DiagnosticReport.rs?category=http://terminology.hl7.org/CodeSystem/v2-0074|RAD"
)


def entries(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [
        e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == mode
    ]


def observations(client: httpx.Client, **params: str) -> dict[str, Any]:
    reply = client.get("/Observation", params={"patient": PATIENT, "_count": "50", **params})
    assert reply.status_code == 200, reply.text
    bundle: dict[str, Any] = reply.json()
    return bundle


def lab_codes(gateway: Gateway) -> list[str]:
    everything = observations(gateway.client("user/*.rs"))
    codes = sorted({o["code"]["coding"][0]["code"] for o in entries(everything)})
    assert len(codes) >= 2, "the seeded patient needs results of two tests at least"
    return codes


def test_granular_lab_scope_searches_lab_results(gateway: Gateway, fhir: Any) -> None:
    bundle = fhir(observations(gateway.client(f"launch/patient {LAB}", patient=PATIENT)))

    found = entries(bundle)
    assert found
    assert all(o["category"][0]["coding"][0]["code"] == "laboratory" for o in found)


def test_granular_scope_filters_out_what_it_does_not_cover(gateway: Gateway) -> None:
    bundle = observations(gateway.client(VITALS, patient=PATIENT))

    assert entries(bundle) == []  # the lab's results are all laboratory
    assert "total" not in bundle  # no count of what the token may not see


def test_granular_code_scope_keeps_that_code_only(gateway: Gateway) -> None:
    first, *_ = lab_codes(gateway)
    scope = f"patient/Observation.rs?code=http://loinc.org|{first}"

    found = entries(observations(gateway.client(scope, patient=PATIENT)))

    assert found
    assert {o["code"]["coding"][0]["code"] for o in found} == {first}


def test_granular_scopes_combine_as_a_union(gateway: Gateway) -> None:
    first, second, *_ = lab_codes(gateway)
    scope = (
        f"patient/Observation.rs?code=http://loinc.org|{first} "
        f"patient/Observation.rs?code=http://loinc.org|{second}"
    )

    found = entries(observations(gateway.client(scope, patient=PATIENT)))

    assert {o["code"]["coding"][0]["code"] for o in found} == {first, second}


def test_granular_scope_stays_in_the_patient_compartment(gateway: Gateway) -> None:
    client = gateway.client(LAB, patient="100003")

    reply = client.get("/Observation", params={"patient": PATIENT, "_count": "50"})

    assert reply.status_code == 403, reply.text
    assert reply.json()["issue"][0]["code"] == "forbidden"


def test_granular_read_outside_the_restriction_is_403(gateway: Gateway) -> None:
    reports = gateway.client("user/*.rs").get("/DiagnosticReport", params={"patient": PATIENT})
    report_id = reports.json()["entry"][0]["resource"]["id"]

    allowed = gateway.client(REPORT_LAB, patient=PATIENT).get(f"/DiagnosticReport/{report_id}")
    refused = gateway.client(REPORT_RAD, patient=PATIENT).get(f"/DiagnosticReport/{report_id}")

    assert allowed.status_code == 200
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["code"] == "forbidden"


def test_granular_scope_applies_to_included_resources(gateway: Gateway) -> None:
    params = {"patient": PATIENT, "_include": "DiagnosticReport:result"}
    with_lab = gateway.client(f"{REPORT_LAB} {LAB}", patient=PATIENT)
    with_vitals = gateway.client(f"{REPORT_LAB} {VITALS}", patient=PATIENT)

    lab_bundle = with_lab.get("/DiagnosticReport", params=params).json()
    vitals_bundle = with_vitals.get("/DiagnosticReport", params=params).json()

    assert entries(lab_bundle, "include")
    assert entries(vitals_bundle)  # the reports themselves
    assert entries(vitals_bundle, "include") == []  # lab results are not vital signs


def test_granular_scope_applies_to_batch_entries(gateway: Gateway) -> None:
    reports = gateway.client("user/*.rs").get("/DiagnosticReport", params={"patient": PATIENT})
    report_id = reports.json()["entry"][0]["resource"]["id"]
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"DiagnosticReport/{report_id}"}},
            {"request": {"method": "GET", "url": f"Observation?patient={PATIENT}"}},
        ],
    }
    client = gateway.client(f"{REPORT_RAD} {VITALS}", patient=PATIENT)

    reply = client.post("/", json=batch, headers={"Content-Type": "application/fhir+json"})

    assert reply.status_code == 200, reply.text
    read, search = reply.json()["entry"]
    assert read["response"]["status"] == "403"
    assert "resource" not in read
    assert entries(search["resource"]) == []


def test_system_granular_scope_needs_no_patient(gateway: Gateway) -> None:
    scope = f"system/Observation.rs?category={OBS_CATEGORY}|laboratory"

    found = entries(observations(gateway.client(scope)))

    assert found
    assert all(o["subject"]["reference"] == f"Patient/{PATIENT}" for o in found)


def test_system_scope_backend_service_reads_any_patient(gateway: Gateway) -> None:
    client = gateway.client("system/*.rs")

    assert client.get(f"/Patient/{PATIENT}").status_code == 200
    assert client.get("/Patient/100003").status_code == 200
    assert (
        client.post(
            "/Observation", json={}, headers={"Content-Type": "application/fhir+json"}
        ).status_code
        == 403
    )  # rs grants no create


@pytest.mark.parametrize(
    "scope",
    [
        "patient/Observation.rs?date=ge2020-01-01",
        "patient/Observation.rs?category:not=laboratory",
        "patient/*.rs?category=laboratory",
    ],
)
def test_granular_scope_not_understood_is_refused_not_widened(gateway: Gateway, scope: str) -> None:
    reply = gateway.client(scope, patient=PATIENT).get("/Observation", params={"patient": PATIENT})

    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
