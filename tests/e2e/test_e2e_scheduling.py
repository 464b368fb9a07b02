"""Scheduling as an app does it: providers, Thursday's free slots, book, list, cancel.

The scheduling system speaks SOAP 1.2 with a WS-Security UsernameToken on
every call and local New York times without an offset. The calendar matters
here, so this module runs its own mock with a pinned "today" (a Wednesday
just before the end of daylight saving time): the next Thursday is on
Eastern Daylight Time (-04:00), the one after on Eastern Standard Time
(-05:00).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import Gateway, start_gateway
from tests.uscore import assert_us_core_practitioner

pytestmark = pytest.mark.e2e

TODAY = "2026-10-28"  # a Wednesday
THURSDAY_EDT, FRIDAY_EDT = "2026-10-29", "2026-10-30"  # still daylight saving time
THURSDAY_EST, FRIDAY_EST = "2026-11-05", "2026-11-06"  # standard time
NEW_YORK = ZoneInfo("America/New_York")
FHIR_JSON = "application/fhir+json"
SCOPES = "user/Practitioner.rs user/Slot.rs user/Appointment.crus"


@pytest.fixture(scope="module")
def pinned_hospital() -> Iterator[MockHospital]:
    with MockHospital.start(today=TODAY, patients=500) as hospital:
        yield hospital


@pytest.fixture(scope="module")
def pinned_gateway(
    pinned_hospital: MockHospital, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with start_gateway(tmp_path_factory.mktemp("scheduling"), pinned_hospital.ehr_url) as gw:
        yield gw


@pytest.fixture
def hospital(pinned_hospital: MockHospital) -> MockHospital:
    pinned_hospital.reset()
    return pinned_hospital


@pytest.fixture
def app(pinned_gateway: Gateway, hospital: MockHospital) -> httpx.Client:
    """A scheduling app's client, with the scopes such an app asks for."""
    return pinned_gateway.client(SCOPES)


# -- helpers -------------------------------------------------------------------


def _next(bundle: dict[str, Any]) -> str | None:
    return next((x["url"] for x in bundle.get("link", []) if x["relation"] == "next"), None)


def _search(client: httpx.Client, fhir: Any, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every matching resource of a search, following `next` links."""
    reply = client.get(path, params=params)
    assert reply.status_code == 200, reply.text
    bundle = fhir(reply.json())
    assert bundle["type"] == "searchset"
    resources = [e["resource"] for e in bundle.get("entry", [])]
    pages = 1
    while (url := _next(bundle)) is not None:
        reply = client.get(url)
        assert reply.status_code == 200, reply.text
        bundle = fhir(reply.json())
        resources += [e["resource"] for e in bundle.get("entry", [])]
        pages += 1
        assert pages < 50
    return resources


def _new_york(local: str) -> str:
    """A legacy `yyyy-MM-ddTHH:mm` New York wall-clock time as a FHIR instant."""
    return datetime.fromisoformat(local).replace(tzinfo=NEW_YORK).isoformat()


def _free_slots(hospital: MockHospital, provider: str, day: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = hospital.get(
        "/scheduling/slots", provider=provider, status="FREE", **{"from": day, "to": day}
    )
    return rows


def _provider_with_free_thursdays(hospital: MockHospital) -> str:
    for provider in hospital.get("/scheduling/providers"):
        if not provider["Active"]:
            continue
        pid = str(provider["ProviderId"])
        if all(len(_free_slots(hospital, pid, day)) >= 3 for day in (THURSDAY_EDT, THURSDAY_EST)):
            return pid
    raise AssertionError("no active provider has free slots on both Thursdays")


def _living_patient(hospital: MockHospital) -> str:
    return str(next(p["MRN"] for p in hospital.sample_patients(20) if p["DeceasedFlag"] == "N"))


def _appointment(slot_id: str, mrn: str, provider: str, reason: str) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "status": "booked",
        "description": reason,
        "slot": [{"reference": f"Slot/{slot_id}"}],
        "participant": [
            {"actor": {"reference": f"Patient/{mrn}"}, "status": "accepted"},
            {"actor": {"reference": f"Practitioner/{provider}"}, "status": "accepted"},
        ],
    }


def _book(
    client: httpx.Client, fhir: Any, slot_id: str, mrn: str, provider: str, reason: str
) -> httpx.Response:
    body = fhir(_appointment(slot_id, mrn, provider, reason))
    return client.post("/Appointment", json=body, headers={"Content-Type": FHIR_JSON})


def _booked(
    client: httpx.Client, fhir: Any, hospital: MockHospital
) -> tuple[str, str, str, dict[str, Any]]:
    """Book the provider's first free slot on the standard-time Thursday."""
    provider = _provider_with_free_thursdays(hospital)
    slot = _free_slots(hospital, provider, THURSDAY_EST)[0]
    mrn = _living_patient(hospital)
    reply = _book(client, fhir, slot["SlotId"], mrn, provider, "Follow-up visit")
    assert reply.status_code == 201, reply.text
    return provider, mrn, str(slot["SlotId"]), fhir(reply.json())


def _slot_search(client: httpx.Client, fhir: Any, provider: str, thu: str, fri: str) -> Any:
    return _search(
        client,
        fhir,
        "/Slot",
        **{"schedule.actor": f"Practitioner/{provider}", "status": "free"},
        start=[f"ge{thu}", f"lt{fri}"],
    )


# -- practitioners ---------------------------------------------------------------


def test_practitioner_search_lists_every_provider(
    app: httpx.Client, hospital: MockHospital, fhir: Any
) -> None:
    providers = {p["ProviderId"]: p for p in hospital.get("/scheduling/providers")}
    found = _search(app, fhir, "/Practitioner", _count=10)  # 25 providers: three pages
    assert sorted(p["id"] for p in found) == sorted(providers)
    for practitioner in found:
        assert_us_core_practitioner(practitioner)
        legacy = providers[practitioner["id"]]
        assert practitioner["identifier"] == [
            {"system": "http://hl7.org/fhir/sid/us-npi", "value": legacy["NPI"]}
        ]
        family, given = legacy["Name"].split(", ")
        assert practitioner["name"][0]["family"] == family
        assert practitioner["name"][0]["given"] == [given]
        assert practitioner["active"] is legacy["Active"]
    assert [p["active"] for p in found].count(False) == 2


def test_practitioner_read_by_id(app: httpx.Client, hospital: MockHospital, fhir: Any) -> None:
    legacy = hospital.get("/scheduling/providers")[2]
    reply = app.get(f"/Practitioner/{legacy['ProviderId']}")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith(FHIR_JSON)
    practitioner = fhir(reply.json())
    assert_us_core_practitioner(practitioner)
    assert practitioner["id"] == legacy["ProviderId"]
    assert practitioner["identifier"][0]["value"] == legacy["NPI"]
    assert practitioner["qualification"][0]["code"]["text"] == legacy["Specialty"]


def test_practitioner_read_unknown_id_is_404(app: httpx.Client, fhir: Any) -> None:
    reply = app.get("/Practitioner/DR9999")
    assert reply.status_code == 404
    assert fhir(reply.json())["issue"][0]["code"] == "not-found"


def test_practitioner_search_by_name(app: httpx.Client, hospital: MockHospital, fhir: Any) -> None:
    legacy = hospital.get("/scheduling/providers")[4]
    family, given = legacy["Name"].split(", ")
    for value in (family.lower(), family[:4], given.title()):
        found = _search(app, fhir, "/Practitioner", name=value)
        assert legacy["ProviderId"] in [p["id"] for p in found], value
        for practitioner in found:
            names = [practitioner["name"][0]["family"], *practitioner["name"][0]["given"]]
            assert any(n.lower().startswith(value.lower()) for n in names)
    assert _search(app, fhir, "/Practitioner", name="Zzyzx") == []


# -- slots -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("thursday", "friday", "offset"),
    [(THURSDAY_EDT, FRIDAY_EDT, "-04:00"), (THURSDAY_EST, FRIDAY_EST, "-05:00")],
)
def test_slot_search_gives_thursdays_free_slots_in_new_york_time(
    app: httpx.Client, hospital: MockHospital, fhir: Any, thursday: str, friday: str, offset: str
) -> None:
    provider = _provider_with_free_thursdays(hospital)
    legacy = {s["SlotId"]: s for s in _free_slots(hospital, provider, thursday)}
    slots = _slot_search(app, fhir, provider, thursday, friday)
    assert sorted(s["id"] for s in slots) == sorted(legacy)
    for slot in slots:
        row = legacy[slot["id"]]
        assert slot["status"] == "free"
        assert slot["schedule"]["reference"] == f"Schedule/{provider}"
        # The legacy wall-clock time, with New York's offset on that day.
        assert slot["start"] == f"{row['Start']}:00{offset}" == _new_york(row["Start"])
        assert slot["end"] == f"{row['End']}:00{offset}"
        assert slot["start"].startswith(f"{thursday}T")


def test_slot_search_with_new_york_instants_matches_the_date_search(
    app: httpx.Client, hospital: MockHospital, fhir: Any
) -> None:
    # FHIR date parameters take dateTimes too; an app that works in local
    # time asks from Thursday midnight to Friday midnight in New York.
    provider = _provider_with_free_thursdays(hospital)
    legacy = sorted(s["SlotId"] for s in _free_slots(hospital, provider, THURSDAY_EST))
    slots = _search(
        app,
        fhir,
        "/Slot",
        **{"schedule.actor": f"Practitioner/{provider}", "status": "free"},
        start=[f"ge{THURSDAY_EST}T00:00:00-05:00", f"lt{FRIDAY_EST}T00:00:00-05:00"],
    )
    assert sorted(s["id"] for s in slots) == legacy
    # Bounds on the instant: 09:00-12:00 New York is 14:00-17:00 UTC.
    morning = _search(
        app,
        fhir,
        "/Slot",
        **{"schedule.actor": f"Practitioner/{provider}", "status": "free"},
        start=[f"ge{THURSDAY_EST}T14:00:00Z", f"lt{THURSDAY_EST}T17:00:00Z"],
    )
    expected = [
        s["SlotId"]
        for s in _free_slots(hospital, provider, THURSDAY_EST)
        if "09:00" <= s["Start"][11:] < "12:00"
    ]
    assert sorted(s["id"] for s in morning) == sorted(expected)


# -- booking ---------------------------------------------------------------------


def test_booking_takes_the_slot_in_fhir_and_in_the_legacy_system(
    app: httpx.Client, pinned_gateway: Gateway, hospital: MockHospital, fhir: Any
) -> None:
    provider = _provider_with_free_thursdays(hospital)
    slot = _free_slots(hospital, provider, THURSDAY_EST)[1]
    mrn = _living_patient(hospital)
    reply = _book(app, fhir, slot["SlotId"], mrn, provider, "Follow-up visit")
    assert reply.status_code == 201, reply.text
    assert reply.headers["content-type"].startswith(FHIR_JSON)
    created = fhir(reply.json())
    confirmation = created["id"]
    assert confirmation.startswith("CN") and confirmation[2:].isdigit()
    location = reply.headers["location"]
    assert location.split("/_history/")[0] == f"{pinned_gateway.base}/Appointment/{confirmation}"

    # The legacy system: the slot is booked under that confirmation number.
    legacy = hospital.get(f"/scheduling/appointments/{confirmation}")
    assert legacy["SlotId"] == slot["SlotId"]
    assert legacy["MRN"] == mrn
    assert legacy["ProviderId"] == provider
    assert legacy["Status"] == "BOOKED"
    assert legacy["Reason"] == "Follow-up visit"
    rows = hospital.get(
        "/scheduling/slots", provider=provider, **{"from": THURSDAY_EST, "to": THURSDAY_EST}
    )
    taken = next(r for r in rows if r["SlotId"] == slot["SlotId"])
    assert taken["Status"] == "BOOKED"
    assert taken["ConfirmationNumber"] == confirmation

    # FHIR: the slot is no longer free.
    free = _slot_search(app, fhir, provider, THURSDAY_EST, FRIDAY_EST)
    assert slot["SlotId"] not in [s["id"] for s in free]
    assert len(free) == len(_free_slots(hospital, provider, THURSDAY_EST))


def test_booking_a_taken_slot_is_409_conflict(
    app: httpx.Client, hospital: MockHospital, fhir: Any
) -> None:
    provider, mrn, slot_id, first = _booked(app, fhir, hospital)
    other = _living_patient(hospital)
    reply = _book(app, fhir, slot_id, other, provider, "Second try")
    assert reply.status_code == 409
    assert reply.headers["content-type"].startswith(FHIR_JSON)
    assert fhir(reply.json())["issue"][0]["code"] == "conflict"
    legacy = hospital.get(f"/scheduling/appointments/{first['id']}")
    assert (legacy["MRN"], legacy["Status"]) == (mrn, "BOOKED")
    assert hospital.stats()["scheduling"]["faults"]["SLOT-TAKEN"] == 1


def test_booking_an_unknown_slot_is_422(
    app: httpx.Client, hospital: MockHospital, fhir: Any
) -> None:
    provider = _provider_with_free_thursdays(hospital)
    reply = _book(app, fhir, "S9999999", _living_patient(hospital), provider, "Checkup")
    assert reply.status_code == 422
    fhir(reply.json())


def test_appointment_search_lists_the_booking(
    app: httpx.Client, hospital: MockHospital, fhir: Any
) -> None:
    provider, mrn, slot_id, created = _booked(app, fhir, hospital)
    legacy = {a["ConfirmationNumber"]: a for a in hospital.get("/scheduling/appointments", mrn=mrn)}
    for patient in (f"Patient/{mrn}", mrn):
        found = _search(app, fhir, "/Appointment", patient=patient)
        assert sorted(a["id"] for a in found) == sorted(legacy)
    ours = next(a for a in found if a["id"] == created["id"])
    slot = next(
        s for s in hospital.get("/scheduling/slots", provider=provider) if s["SlotId"] == slot_id
    )
    assert ours["status"] == "booked"
    assert ours["slot"] == [{"reference": f"Slot/{slot_id}"}]
    assert ours["start"] == _new_york(slot["Start"])
    assert ours["start"].endswith("-05:00")
    assert ours["end"] == _new_york(slot["End"])
    assert ours["description"] == "Follow-up visit"
    actors = [p["actor"]["reference"] for p in ours["participant"]]
    assert actors == [f"Patient/{mrn}", f"Practitioner/{provider}"]
    statuses = {"BOOKED": "booked", "CANCELLED": "cancelled", "COMPLETED": "fulfilled"}
    for appointment in found:
        row = legacy[appointment["id"]]
        assert appointment["status"] == statuses[row["Status"]]
        assert appointment["start"] == _new_york(row["Start"])


def test_appointment_search_of_an_unknown_patient_is_empty(app: httpx.Client, fhir: Any) -> None:
    assert _search(app, fhir, "/Appointment", patient="Patient/999999") == []


# -- cancelling --------------------------------------------------------------------


def _assert_cancelled_and_free(
    hospital: MockHospital, provider: str, slot_id: str, confirmation: str
) -> None:
    assert hospital.get(f"/scheduling/appointments/{confirmation}")["Status"] == "CANCELLED"
    assert slot_id in [s["SlotId"] for s in _free_slots(hospital, provider, THURSDAY_EST)]


def test_cancel_by_put_frees_the_slot(app: httpx.Client, hospital: MockHospital, fhir: Any) -> None:
    provider, mrn, slot_id, created = _booked(app, fhir, hospital)
    found = _search(app, fhir, "/Appointment", patient=f"Patient/{mrn}")
    appointment = next(a for a in found if a["id"] == created["id"])
    body = fhir({**appointment, "status": "cancelled"})
    reply = app.put(f"/Appointment/{created['id']}", json=body, headers={"Content-Type": FHIR_JSON})
    assert reply.status_code == 200, reply.text
    fhir(reply.json())
    _assert_cancelled_and_free(hospital, provider, slot_id, created["id"])
    free = _slot_search(app, fhir, provider, THURSDAY_EST, FRIDAY_EST)
    assert slot_id in [s["id"] for s in free]
    found = _search(app, fhir, "/Appointment", patient=f"Patient/{mrn}")
    assert next(a for a in found if a["id"] == created["id"])["status"] == "cancelled"
    # The freed slot can be booked again.
    again = _book(app, fhir, slot_id, mrn, provider, "Rebooked")
    assert again.status_code == 201, again.text
    assert fhir(again.json())["id"] != created["id"]


def test_cancel_by_json_patch_frees_the_slot(
    app: httpx.Client, hospital: MockHospital, fhir: Any
) -> None:
    provider, _, slot_id, created = _booked(app, fhir, hospital)
    reply = app.patch(
        f"/Appointment/{created['id']}",
        content=b'[{"op":"replace","path":"/status","value":"cancelled"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert reply.status_code == 200, reply.text
    fhir(reply.json())
    _assert_cancelled_and_free(hospital, provider, slot_id, created["id"])
    assert hospital.stats()["scheduling"]["calls"]["CancelAppointment"] == 1


@pytest.mark.parametrize("status", ["noshow", "fulfilled", "arrived"])
def test_update_to_another_status_is_422_and_changes_nothing(
    app: httpx.Client, hospital: MockHospital, fhir: Any, status: str
) -> None:
    provider, _, slot_id, created = _booked(app, fhir, hospital)
    put = app.put(
        f"/Appointment/{created['id']}",
        json=fhir({**created, "status": status}),
        headers={"Content-Type": FHIR_JSON},
    )
    patch = app.patch(
        f"/Appointment/{created['id']}",
        content=f'[{{"op":"replace","path":"/status","value":"{status}"}}]'.encode(),
        headers={"Content-Type": "application/json-patch+json"},
    )
    for reply in (put, patch):
        assert reply.status_code == 422, reply.text
        assert reply.headers["content-type"].startswith(FHIR_JSON)
        fhir(reply.json())
    assert hospital.get(f"/scheduling/appointments/{created['id']}")["Status"] == "BOOKED"
    assert slot_id not in [s["SlotId"] for s in _free_slots(hospital, provider, THURSDAY_EST)]
    assert "CancelAppointment" not in hospital.stats()["scheduling"]["calls"]


def test_patch_of_another_field_is_422(
    app: httpx.Client, hospital: MockHospital, fhir: Any
) -> None:
    _, _, _, created = _booked(app, fhir, hospital)
    reply = app.patch(
        f"/Appointment/{created['id']}",
        content=b'[{"op":"replace","path":"/description","value":"Something else"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert reply.status_code == 422
    fhir(reply.json())
    assert hospital.get(f"/scheduling/appointments/{created['id']}")["Status"] == "BOOKED"


def test_cancel_of_an_unknown_confirmation_number_is_404(
    app: httpx.Client, hospital: MockHospital, fhir: Any
) -> None:
    body = fhir({**_appointment("S2000001", "100001", "DR1001", "x"), "status": "cancelled"})
    reply = app.put(
        "/Appointment/CN9999999",
        json={**body, "id": "CN9999999"},
        headers={"Content-Type": FHIR_JSON},
    )
    assert reply.status_code == 404
    assert fhir(reply.json())["issue"][0]["code"] == "not-found"
