"""After a full run across all five legacy systems, the gateway's log holds no PHI or secret.

A real gateway (at info, and at debug: the most it ever writes) in front of the
real mock hospital serves reads, searches, creates, a PATCH, Bundles and
errors (400, 401, 403, 404, 422) for a few seeded patients; then its log is
searched for their names, MRNs, birth dates, phones and addresses, the
legacy password, every token used, the paging key and the admin credential.
"""

from __future__ import annotations

import re
import secrets
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.bodies import claim, heart_rate
from tests.support import ADMIN_TOKEN, Gateway, start_gateway

pytestmark = pytest.mark.e2e

FHIR_JSON = {"Content-Type": "application/fhir+json"}
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"


def _phi(record: dict[str, str]) -> list[str]:
    """What of a legacy patient record must never be logged."""
    family, given, *_ = [*record["Name"].split("^"), "", ""]
    born = datetime.strptime(record["DOB"], "%m/%d/%Y").date()
    values = [record["MRN"], family, given, record["DOB"], born.isoformat()]
    values += [record.get("Phone", ""), record.get("AddressLine1", "")]
    return [v for v in values if len(v) >= 3]


def _found(value: str, logs: str) -> bool:
    # Whole words, case-sensitive: "Li" is a name, "client" is not Li.
    return re.search(rf"(?<![\w]){re.escape(value)}(?![\w])", logs) is not None


def _with(mock: MockHospital, path: str, least: int) -> str:
    for mrn in range(100001, 100200):
        if len(mock.get(path, mrn=str(mrn))) >= least:
            return str(mrn)
    raise AssertionError(f"no seeded patient has {least} rows in {path}")


def _reading(mrn: str, value: float) -> dict[str, Any]:
    return heart_rate(mrn, value)


def _claim(mrn: str, encounter: str, diagnoses: list[str]) -> dict[str, Any]:
    return claim(mrn, encounter, diagnoses, amount=180.0)


@pytest.mark.parametrize("level", ["info", "debug"])
def test_a_full_run_leaves_no_phi_or_secret_in_the_log(
    mock_hospital: MockHospital, tmp_path: Path, level: str
) -> None:
    mock = mock_hospital
    paging_key = secrets.token_urlsafe(24)
    with start_gateway(
        tmp_path, mock.ehr_url, paging_key=paging_key, extra={"log_level": level}
    ) as gw:
        startup_log = gw.logs()
        lab = _with(mock, "/_mock/lab/results", 2)
        meds = _with(mock, "/_mock/pharmacy/prescriptions", 1)
        sick = _with(mock, "/_mock/ehr/problems", 2)
        plain = mock.sample_patients(1, offset=321)[0]["MRN"]
        touched = [lab, meds, sick, plain]
        records = {mrn: mock.patient(mrn) for mrn in touched}
        statuses, tokens = _drive(gw, mock, records, touched)
        logs = gw.logs()
    # The run did what it says: successes and each kind of error.
    assert {200, 201, 400, 401, 403, 404, 422} <= statuses, statuses
    assert len(logs) > len(startup_log)  # the requests were logged
    leaks = []
    for mrn, record in records.items():
        leaks += [f"patient {mrn}: {v!r}" for v in _phi(record) if _found(v, logs)]
    secrets_used = [mock.password, paging_key, ADMIN_TOKEN, *tokens]
    leaks += [f"secret {s[:12]}..." for s in secrets_used if s in logs]
    assert not leaks, "the gateway log holds:\n" + "\n".join(leaks)


def _drive(
    gw: Gateway, mock: MockHospital, records: dict[str, dict[str, str]], touched: list[str]
) -> tuple[set[int], list[str]]:
    lab, meds, sick, plain = touched
    statuses: set[int] = set()
    clinician = gw.client("user/*.cruds")
    patient_app = gw.client("patient/*.rs", patient=plain)
    tokens = [c.headers["Authorization"].removeprefix("Bearer ") for c in (clinician, patient_app)]

    def go(reply: httpx.Response) -> httpx.Response:
        assert reply.status_code < 500, (reply.request.url, reply.status_code, reply.text[:300])
        statuses.add(reply.status_code)
        return reply

    # EHR: reads and searches by every demographic, the chart, vitals.
    for mrn in touched:
        record = records[mrn]
        family, given = record["Name"].split("^")[:2]
        born = datetime.strptime(record["DOB"], "%m/%d/%Y").date().isoformat()
        go(clinician.get(f"/Patient/{mrn}"))
        go(clinician.get("/Patient", params={"family": family, "given": given}))
        go(clinician.get("/Patient", params={"birthdate": born, "family": family}))
        go(clinician.get("/Patient", params={"identifier": mrn}))
        go(clinician.get("/AllergyIntolerance", params={"patient": mrn}))
        go(clinician.get("/Condition", params={"patient": mrn}))
    bundle = go(clinician.get("/Patient", params={"family": "S", "_count": "2"})).json()
    nxt = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
    if nxt:
        go(clinician.get(nxt))
    go(clinician.post("/Observation", json=_reading(plain, 72), headers=FHIR_JSON))
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _reading(plain, 60 + i),
                "request": {"method": "POST", "url": "Observation"},
            }
            for i in range(3)
        ],
    }
    go(clinician.post(gw.base, json=transaction, headers=FHIR_JSON))
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{lab}"}},
            {"request": {"method": "GET", "url": "Patient/999999"}},
            {"request": {"method": "GET", "url": f"Condition?patient={sick}"}},
        ],
    }
    go(clinician.post(gw.base, json=batch, headers=FHIR_JSON))
    # Lab and pharmacy.
    go(clinician.get("/Observation", params={"patient": lab, "category": "laboratory"}))
    reports = go(
        clinician.get(
            "/DiagnosticReport", params={"patient": lab, "_include": "DiagnosticReport:result"}
        )
    ).json()
    for entry in reports.get("entry", [])[:1]:
        go(clinician.get(f"/DiagnosticReport/{entry['resource']['id']}"))
    go(clinician.get("/MedicationRequest", params={"patient": meds}))
    # Scheduling: providers, slots, book, find, cancel.
    go(clinician.get("/Practitioner"))
    slots = mock.get("/_mock/scheduling/slots", status="FREE", limit="1")
    appointment = {
        "resourceType": "Appointment",
        "status": "booked",
        "description": f"Follow-up for {records[plain]['Name'].split('^')[0]}",
        "slot": [{"reference": f"Slot/{slots[0]['SlotId']}"}],
        "participant": [{"actor": {"reference": f"Patient/{plain}"}, "status": "accepted"}],
    }
    booked = go(clinician.post("/Appointment", json=appointment, headers=FHIR_JSON))
    go(clinician.get("/Appointment", params={"patient": plain}))
    if booked.status_code == 201:
        go(
            clinician.patch(
                f"/Appointment/{booked.json()['id']}",
                content=b'[{"op":"replace","path":"/status","value":"cancelled"}]',
                headers={"Content-Type": "application/json-patch+json"},
            )
        )
    # Billing: a claim from the patient's diagnoses, then its status.
    conditions = go(clinician.get("/Condition", params={"patient": sick})).json()
    codes = [
        c["code"]
        for e in conditions.get("entry", [])
        for c in e["resource"]["code"]["coding"]
        if c["system"] == ICD10CM
    ][:2]
    encounter = (date.fromisoformat(mock.info()["today"]) - timedelta(days=3)).isoformat()
    claim = go(clinician.post("/Claim", json=_claim(sick, encounter, codes), headers=FHIR_JSON))
    if claim.status_code == 201:
        go(clinician.get(f"/Claim/{claim.json()['id']}"))
    # A patient app: its own data, then another patient's (403).
    go(patient_app.get(f"/Patient/{plain}"))
    go(patient_app.get("/Observation", params={"patient": plain, "category": "laboratory"}))
    go(patient_app.get(f"/Patient/{lab}"))
    # Errors that carry PHI in the request.
    go(clinician.get("/Patient/999999"))
    go(clinician.get("/Patient", params={"birthdate": f"not-a-date-{lab}"}))
    bad = {**_reading(plain, 70), "valueQuantity": {"value": 70, "unit": "furlong", "code": "x"}}
    go(clinician.post("/Observation", json=bad, headers=FHIR_JSON))
    go(clinician.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON))
    go(
        httpx.get(
            f"{gw.base}/Patient/{plain}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
    )
    go(httpx.get(f"{gw.base}/Patient?family={records[plain]['Name'].split('^')[0]}", timeout=30))
    return statuses, tokens
