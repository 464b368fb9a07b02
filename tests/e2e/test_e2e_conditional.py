"""Conditional create (If-None-Exist) and If-Match, through the real gateway."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bridge.mock import MockHospital
from tests.support import Gateway, conditional_scheduling, start_gateway

pytestmark = pytest.mark.e2e
JSON = {"Content-Type": "application/fhir+json"}


def _appointment(mrn: str, slot: str) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "status": "booked",
        "slot": [{"reference": f"Slot/{slot}"}],
        "participant": [{"actor": {"reference": f"Patient/{mrn}"}, "status": "accepted"}],
    }


def _by_count(mock: MockHospital) -> dict[int, str]:
    """A patient with no appointment and one with two or more."""
    found: dict[int, str] = {}
    for record in mock.sample_patients(300):
        n = len(mock.get("/_mock/scheduling/appointments", mrn=record["MRN"]))
        if n in (0, 2) or n > 2:
            found.setdefault(min(n, 2), record["MRN"])
        if len(found) == 2:
            break
    return found


def _free_slots(mock: MockHospital) -> list[str]:
    provider = mock.get("/_mock/scheduling/providers", limit=1)[0]["ProviderId"]
    slots = mock.get("/_mock/scheduling/slots", provider=provider, status="FREE")
    return [s["SlotId"] for s in slots]


def test_conditional_create_runs_the_declared_search_first(tmp_path: Path, fhir: Any) -> None:
    folder = conditional_scheduling(tmp_path)
    with (
        MockHospital.start(patients=300, today="2026-11-24") as mock,
        start_gateway(tmp_path, mock.ehr_url, mappings=folder) as gw,
    ):
        patients = _by_count(mock)
        assert set(patients) == {0, 2}
        slots = _free_slots(mock)
        client = gw.client("user/*.*")

        def post(mrn: str, slot: str) -> Any:
            headers = {**JSON, "If-None-Exist": f"patient=Patient/{mrn}"}
            return client.post("/Appointment", json=_appointment(mrn, slot), headers=headers)

        created = post(patients[0], slots[0])
        assert created.status_code == 201, created.text
        # Now the patient has exactly one appointment: the same request finds it.
        existing = post(patients[0], slots[1])
        assert existing.status_code == 200
        assert fhir(existing.json())["id"] == created.json()["id"]
        ambiguous = post(patients[2], slots[2])
        assert ambiguous.status_code == 412
        assert fhir(ambiguous.json())["issue"][0]["code"] == "conflict"
        # Only the first one booked anything.
        booked = {a["SlotId"] for a in mock.get("/_mock/scheduling/appointments", mrn=patients[0])}
        assert slots[0] in booked
        free_now = set(_free_slots(mock))
        assert slots[1] in free_now
        assert slots[2] in free_now
        undeclared = client.post(
            "/Appointment",
            json=_appointment(patients[0], slots[3]),
            headers={**JSON, "If-None-Exist": "status=booked"},
        )
        assert undeclared.status_code == 400


def test_if_match_on_a_system_without_versions_is_refused(gateway: Gateway, fhir: Any) -> None:
    body = _appointment("100002", "S2000019") | {"id": "CN0000001", "status": "cancelled"}
    reply = gateway.client("user/*.*").put(
        "/Appointment/CN0000001", json=body, headers={**JSON, "If-Match": 'W/"3"'}
    )
    assert reply.status_code == 412
    assert "keeps no version" in fhir(reply.json())["issue"][0]["diagnostics"]


def test_booking_answers_the_appointment_as_the_system_recorded_it(
    tmp_path: Path, fhir: Any
) -> None:
    with (
        MockHospital.start(patients=300, today="2026-11-24") as mock,
        start_gateway(tmp_path, mock.ehr_url) as gw,
    ):
        slot = _free_slots(mock)[0]
        mrn = mock.sample_patients(1)[0]["MRN"]
        reply = gw.client("user/*.*").post(
            "/Appointment", json=_appointment(mrn, slot), headers=JSON
        )
    assert reply.status_code == 201, reply.text
    booked = fhir(reply.json())
    assert reply.headers["location"].endswith(f"/Appointment/{booked['id']}")
    assert booked["status"] == "booked"
    assert booked["start"] < booked["end"]  # from the booking as the system recorded it
    assert booked["slot"] == [{"reference": f"Slot/{slot}"}]
    actors = [p["actor"]["reference"] for p in booked["participant"]]
    assert f"Patient/{mrn}" in actors
    assert any(a.startswith("Practitioner/") for a in actors)


def test_a_conditional_create_finds_only_what_the_token_may_see(tmp_path: Path, fhir: Any) -> None:
    # The condition is a search whose match is answered: a patient token's finds
    # its own patient's resources only, and needs the right to search.
    folder = conditional_scheduling(tmp_path)
    with (
        MockHospital.start(patients=300, today="2026-11-24") as mock,
        start_gateway(tmp_path, mock.ehr_url, mappings=folder) as gw,
    ):
        other = _by_count(mock)[0]
        own = next(
            r["MRN"]
            for r in mock.sample_patients(300)
            if r["MRN"] != other and not mock.get("/_mock/scheduling/appointments", mrn=r["MRN"])
        )
        slots = _free_slots(mock)
        theirs = gw.client("user/*.*").post(
            "/Appointment", json=_appointment(other, slots[0]), headers=JSON
        )
        assert theirs.status_code == 201, theirs.text
        patient = gw.client("patient/Appointment.crs", patient=own)

        def post(condition: str, slot: str, **extra: str) -> Any:
            headers = {**JSON, "If-None-Exist": condition, **extra}
            return patient.post("/Appointment", json=_appointment(own, slot), headers=headers)

        peek = post(f"patient=Patient/{other}", slots[1])
        assert peek.status_code == 403, peek.text
        assert theirs.json()["id"] not in peek.text
        assert "own patient" in fhir(peek.json())["issue"][0]["diagnostics"]
        batch = patient.post(
            "/",
            json={
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [
                    {
                        "resource": _appointment(own, slots[1]),
                        "request": {
                            "method": "POST",
                            "url": "Appointment",
                            "ifNoneExist": f"patient=Patient/{other}",
                        },
                    }
                ],
            },
            headers=JSON,
        )
        assert batch.status_code == 200, batch.text
        [answer] = batch.json()["entry"]
        assert answer["response"]["status"].startswith("403")
        assert theirs.json()["id"] not in batch.text
        blind = gw.client("patient/Appointment.c", patient=own).post(
            "/Appointment",
            json=_appointment(own, slots[1]),
            headers={**JSON, "If-None-Exist": f"patient=Patient/{own}"},
        )
        assert blind.status_code == 403
        assert slots[1] in _free_slots(mock)  # nothing refused booked anything
        # Its own: created, then found; a preference for an asynchronous answer is
        # answered at once, where what the token may see is known.
        mine = post(f"patient=Patient/{own}", slots[1], Prefer="respond-async")
        assert mine.status_code == 201, mine.text
        again = post(f"patient=Patient/{own}", slots[2])
        assert again.status_code == 200
        assert fhir(again.json())["id"] == mine.json()["id"]


def test_conditional_creates_go_asynchronously_where_the_caller_sees_everything(
    tmp_path: Path, fhir: Any
) -> None:
    folder = conditional_scheduling(tmp_path)
    with (
        MockHospital.start(patients=300, today="2026-11-24") as mock,
        start_gateway(tmp_path, mock.ehr_url, mappings=folder) as gw,
    ):
        free = [
            r["MRN"]
            for r in mock.sample_patients(300)
            if not mock.get("/_mock/scheduling/appointments", mrn=r["MRN"])
        ]
        slots = _free_slots(mock)
        later = {**JSON, "Prefer": "respond-async"}

        def entry(mrn: str, slot: str, **request: str) -> dict[str, Any]:
            return {
                "resource": _appointment(mrn, slot),
                "request": {"method": "POST", "url": "Appointment", **request},
            }

        def bundle(*entries: dict[str, Any]) -> dict[str, Any]:
            return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}

        clinician = gw.client("user/*.*")
        condition = {"If-None-Exist": f"patient=Patient/{free[0]}"}
        accepted = clinician.post(
            "/Appointment", json=_appointment(free[0], slots[0]), headers={**later, **condition}
        )
        assert accepted.status_code == 202, accepted.text
        status = accepted.headers["content-location"].removeprefix(gw.base)
        for _ in range(300):
            done = clinician.get(status)
            if done.status_code != 202:
                break
            time.sleep(0.1)
        assert done.status_code == 200, done.text
        [result] = fhir(done.json())["entry"]
        assert result["response"]["status"].startswith("201")
        conditional = entry(free[1], slots[1], ifNoneExist=f"patient=Patient/{free[1]}")
        assert clinician.post("/", json=bundle(conditional), headers=later).status_code == 202
        # A patient token's is kept to what it may see: answered at once.
        own = gw.client("patient/Appointment.crs", patient=free[2])
        mine = entry(free[2], slots[2], ifNoneExist=f"patient=Patient/{free[2]}")
        at_once = own.post("/", json=bundle(mine), headers=later)
        assert at_once.status_code == 200, at_once.text
        assert fhir(at_once.json())["type"] == "transaction-response"
        # A token that may not search may not make a conditional create, and is told why;
        # an If-Match alone asks nothing of search.
        blind = gw.client("patient/Appointment.c", patient=free[3])
        refused = blind.post(
            "/",
            json=bundle(entry(free[3], slots[3], ifNoneExist=f"patient=Patient/{free[3]}")),
            headers=later,
        )
        assert refused.status_code == 403
        assert "If-None-Exist runs a search" in fhir(refused.json())["issue"][0]["diagnostics"]
        matched = blind.post(
            "/", json=bundle(entry(free[3], slots[3], ifMatch='W/"1"')), headers=later
        )
        assert matched.status_code == 202, matched.text
