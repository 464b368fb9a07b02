"""Prescriptions from the pharmacy: RxNorm codes, sig text, offset paging, ticket expiry.

The pharmacy codes drugs locally (`RX-0006`; a code table gives RxNorm),
pages with Offset/Limit, treats an unknown MRN as an empty list, and carries
its session ticket as the first element of every request body.
"""

from __future__ import annotations

import csv
from decimal import Decimal
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import ROOT, Gateway
from tests.uscore import assert_us_core_medication_request

pytestmark = pytest.mark.e2e

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
STATUSES = {
    "ACTIVE": "active",
    "COMPLETED": "completed",
    "CANCELLED": "cancelled",
    "ON-HOLD": "on-hold",
}


def _drug_table() -> dict[str, dict[str, str]]:
    with (ROOT / "mappings" / "pharmacy" / "tables" / "drugs.csv").open(newline="") as f:
        return {row["local"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def legacy_prescriptions(mock_hospital_server: MockHospital) -> dict[str, list[dict[str, Any]]]:
    """Prescriptions of the first 100 patients, by MRN, as the pharmacy holds them."""
    return {
        str(mrn): mock_hospital_server.get("/pharmacy/prescriptions", mrn=str(mrn))
        for mrn in range(100001, 100101)
    }


def _most(legacy: dict[str, list[dict[str, Any]]]) -> tuple[str, list[dict[str, Any]]]:
    return max(legacy.items(), key=lambda item: len(item[1]))


@pytest.fixture
def app(gateway: Gateway) -> httpx.Client:
    return gateway.client("user/MedicationRequest.rs")


def _next(bundle: dict[str, Any]) -> str | None:
    return next((x["url"] for x in bundle.get("link", []) if x["relation"] == "next"), None)


def _pages(client: httpx.Client, fhir: Any, **params: Any) -> list[dict[str, Any]]:
    reply = client.get("/MedicationRequest", params=params)
    assert reply.status_code == 200, reply.text
    bundles = [fhir(reply.json())]
    while (url := _next(bundles[-1])) is not None:
        reply = client.get(url)
        assert reply.status_code == 200, reply.text
        bundles.append(fhir(reply.json()))
        assert len(bundles) < 100
    return bundles


def _requests(client: httpx.Client, fhir: Any, **params: Any) -> list[dict[str, Any]]:
    found = [e["resource"] for b in _pages(client, fhir, **params) for e in b.get("entry", [])]
    for request in found:
        assert_us_core_medication_request(request)
    return found


def test_prescriptions_match_the_pharmacy(
    app: httpx.Client, legacy_prescriptions: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    mrn, rows = _most(legacy_prescriptions)
    found = {r["id"]: r for r in _requests(app, fhir, patient=f"Patient/{mrn}")}
    assert sorted(found) == sorted(r["RxNumber"] for r in rows)
    table = _drug_table()
    for row in rows:
        request = found[row["RxNumber"]]
        coding = request["medicationCodeableConcept"]["coding"][0]
        assert (coding["system"], coding["code"]) == (RXNORM, table[row["DrugCode"]]["code"])
        assert request["medicationCodeableConcept"]["text"] == row["DrugName"]
        assert request["dosageInstruction"][0]["text"] == row["Sig"]
        assert request["status"] == STATUSES[row["Status"]]
        assert request["intent"] == "order"
        assert request["subject"] == {"reference": f"Patient/{mrn}"}
        month, day, year = row["WrittenDate"].split("/")
        assert request["authoredOn"] == f"{year}-{month}-{day}"
        assert request["requester"]["display"] == row["Prescriber"]
        assert request["requester"]["identifier"]["value"] == row["PrescriberId"]
        assert Decimal(str(request["dispenseRequest"]["quantity"]["value"])) == Decimal(
            str(row["Quantity"])
        )
        assert request["dispenseRequest"]["numberOfRepeatsAllowed"] == row["Refills"]


def test_local_drug_codes_become_rxnorm(
    app: httpx.Client, legacy_prescriptions: dict[str, list[dict[str, Any]]], fhir: Any
) -> None:
    # docs/mock.md: RX-0006 is atorvastatin 80 MG Oral Tablet, RxCUI 259255, and
    # RX-0001 lisinopril 10 MG Oral Tablet, RxCUI 314076.
    known = {"RX-0006": "259255", "RX-0001": "314076"}
    table = _drug_table()
    assert {code: table[code]["code"] for code in known} == known
    checked: set[str] = set()
    for mrn, rows in legacy_prescriptions.items():
        local = {
            r["RxNumber"]: r["DrugCode"] for r in rows if r["DrugCode"] in set(known) - checked
        }
        if not local:
            continue
        for request in _requests(app, fhir, patient=mrn):
            if request["id"] in local:
                coding = request["medicationCodeableConcept"]["coding"]
                assert [(c["system"], c["code"]) for c in coding] == [
                    (RXNORM, known[local[request["id"]]])
                ]
                assert coding[0]["display"] == table[local[request["id"]]]["display"]
                checked.add(local[request["id"]])
        if checked == set(known):
            break
    assert checked == set(known)


@pytest.mark.parametrize("count", [3, 5])
def test_paging_visits_every_prescription_once(
    app: httpx.Client,
    mock_hospital: MockHospital,
    legacy_prescriptions: dict[str, list[dict[str, Any]]],
    fhir: Any,
    count: int,
) -> None:
    mrn, rows = _most(legacy_prescriptions)
    assert len(rows) > 2 * count
    calls_before = mock_hospital.stats()["pharmacy"]["calls"].get("GetPrescriptions", 0)
    bundles = _pages(app, fhir, patient=mrn, _count=count)
    ids = [e["resource"]["id"] for b in bundles for e in b.get("entry", [])]
    assert len(ids) == len(set(ids)) == len(rows)
    assert ids == [r["RxNumber"] for r in rows]  # newest first, as the pharmacy lists them
    assert [len(b.get("entry", [])) for b in bundles[:-1]] == [count] * (len(bundles) - 1)
    assert len(bundles) == -(-len(rows) // count)
    assert all(b.get("total", len(rows)) == len(rows) for b in bundles)
    # Offset/Limit behind the links: one legacy page per FHIR page, no replay
    # (one more if the reset before this test cost the first call its ticket).
    stats = mock_hospital.stats()["pharmacy"]
    calls = stats["calls"]["GetPrescriptions"] - calls_before
    assert calls == len(bundles) + stats["faults"].get("RX-TICKET", 0)


def test_unknown_patient_is_an_empty_bundle(app: httpx.Client, fhir: Any) -> None:
    reply = app.get("/MedicationRequest", params={"patient": "Patient/999999"})
    assert reply.status_code == 200, reply.text
    bundle = fhir(reply.json())
    assert bundle.get("entry", []) == []
    assert bundle.get("total", 0) == 0


def test_patient_is_required(app: httpx.Client, fhir: Any) -> None:
    reply = app.get("/MedicationRequest")
    assert reply.status_code == 400
    assert fhir(reply.json())["issue"][0]["code"] == "invalid"


def test_expired_ticket_costs_one_new_session(
    app: httpx.Client,
    mock_hospital: MockHospital,
    legacy_prescriptions: dict[str, list[dict[str, Any]]],
    fhir: Any,
) -> None:
    mrn, rows = _most(legacy_prescriptions)
    assert len(_requests(app, fhir, patient=mrn)) == len(rows)
    before = mock_hospital.stats()["pharmacy"]
    mock_hospital.expire_sessions(system="pharmacy")
    assert len(_requests(app, fhir, patient=mrn)) == len(rows)
    after = mock_hospital.stats()["pharmacy"]
    assert after["logins"] == before["logins"] + 1
    assert after["faults"].get("RX-TICKET", 0) == before["faults"].get("RX-TICKET", 0) + 1
