"""Scheduling over real SOAP 1.2/HTTP, with a WS-Security UsernameToken on every call."""

from __future__ import annotations

import datetime as dt

from tests.mock.clients import SOAP12, security_header, utc_stamp

PROVIDER = ["ProviderId", "Name", "Specialty", "NPI", "Active"]
SLOT = ["SlotId", "ProviderId", "Start", "End", "DurationMinutes", "Status"]


def _first_free_slot(sched, wsse, today: dt.date, provider: str = "DR1001") -> dict:
    reply = sched.call(
        "GetOpenSlots",
        wsse(),
        ProviderId=provider,
        FromDate=(today + dt.timedelta(days=1)).isoformat(),
        ToDate=(today + dt.timedelta(days=30)).isoformat(),
    )
    assert reply.status == 200, reply.root
    return reply.records("v:Slots/v:Slot")[0]


# -- WS-Security ----------------------------------------------------------------


def test_good_digest_is_accepted_and_answers_soap12(sched, wsse) -> None:
    reply = sched.call("GetProviders", wsse())
    assert reply.status == 200
    assert reply.root.tag == f"{{{SOAP12}}}Envelope"
    assert reply.headers["content-type"].startswith("application/soap+xml")
    providers = reply.records("v:Providers/v:Provider")
    assert len(providers) == 25
    assert all(list(p) == PROVIDER for p in providers)
    assert {p["Active"] for p in providers} == {"true", "false"}


def test_missing_security_header_faults_sched_auth(sched, mock_hospital) -> None:
    reply = sched.call("GetProviders")
    assert reply.status == 500
    assert reply.fault_code == "SCHED-AUTH"
    code = reply.root.findtext(f".//{{{SOAP12}}}Code/{{{SOAP12}}}Value")
    assert code == "soap12env:Sender"
    assert mock_hospital.stats()["scheduling"]["faults"] == {"SCHED-AUTH": 1}


def test_bad_digest_faults_sched_auth(sched, mock_hospital) -> None:
    header = security_header(mock_hospital.username, "not-the-password")
    assert sched.call("GetProviders", header).fault_code == "SCHED-AUTH"


def test_stale_created_faults_sched_auth(sched, wsse) -> None:
    stale = utc_stamp(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6))
    reply = sched.call("GetProviders", wsse(created=stale))
    assert reply.fault_code == "SCHED-AUTH"
    assert "from the server clock" in reply.root.findtext(f".//{{{SOAP12}}}Text")


def test_replayed_nonce_faults_sched_replay(sched, wsse) -> None:
    header = wsse()
    assert sched.call("GetProviders", header).status == 200
    replay = sched.call("GetProviders", header)
    assert replay.fault_code == "SCHED-REPLAY"


# -- slots and appointments -------------------------------------------------------


def test_open_slots_are_free_weekday_slots_of_that_provider(sched, wsse, today) -> None:
    reply = sched.call(
        "GetOpenSlots",
        wsse(),
        ProviderId="DR1002",
        FromDate=(today + dt.timedelta(days=1)).isoformat(),
        ToDate=(today + dt.timedelta(days=14)).isoformat(),
    )
    slots = reply.records("v:Slots/v:Slot")
    assert len(slots) > 20
    for slot in slots:
        assert list(slot) == SLOT
        assert slot["ProviderId"] == "DR1002" and slot["Status"] == "FREE"
        assert dt.datetime.fromisoformat(slot["Start"]).weekday() < 5


def test_book_twice_is_slot_taken_and_the_slot_disappears(sched, wsse, today, mock_hospital):
    slot = _first_free_slot(sched, wsse, today)
    reply = sched.call("BookAppointment", wsse(), SlotId=slot["SlotId"], MRN="100020", Reason="Flu")
    assert reply.status == 200
    confirmation = reply.text("v:ConfirmationNumber")
    assert confirmation.startswith("CN")

    again = sched.call("BookAppointment", wsse(), SlotId=slot["SlotId"], MRN="100021")
    assert again.fault_code == "SLOT-TAKEN"
    assert _first_free_slot(sched, wsse, today)["SlotId"] != slot["SlotId"]

    booked = mock_hospital.get("/scheduling/slots", provider="DR1001", status="BOOKED")
    assert {"SlotId": slot["SlotId"], "ConfirmationNumber": confirmation}.items() <= next(
        s for s in booked if s["SlotId"] == slot["SlotId"]
    ).items()
    appointments = mock_hospital.get("/scheduling/appointments", mrn="100020")
    mine = next(a for a in appointments if a["ConfirmationNumber"] == confirmation)
    assert (mine["Status"], mine["Reason"], mine["SlotId"]) == ("BOOKED", "Flu", slot["SlotId"])


def test_cancel_frees_the_slot(sched, wsse, today, mock_hospital) -> None:
    slot = _first_free_slot(sched, wsse, today)
    confirmation = sched.call("BookAppointment", wsse(), SlotId=slot["SlotId"], MRN="100022").text(
        "v:ConfirmationNumber"
    )
    reply = sched.call("CancelAppointment", wsse(), ConfirmationNumber=confirmation)
    assert reply.status == 200 and reply.text("v:Result") == "OK"
    assert _first_free_slot(sched, wsse, today)["SlotId"] == slot["SlotId"]
    view = mock_hospital.get(f"/scheduling/appointments/{confirmation}")
    assert view["Status"] == "CANCELLED"


def test_get_appointments_lists_past_and_future(sched, wsse, mock_hospital) -> None:
    mrn = next(
        p["MRN"]
        for p in mock_hospital.sample_patients(50)
        if {a["Status"] for a in mock_hospital.get("/scheduling/appointments", mrn=p["MRN"])}
        >= {"BOOKED", "COMPLETED"}
    )
    reply = sched.call("GetAppointments", wsse(), MRN=mrn)
    rows = reply.records("v:Appointments/v:Appointment")
    expected = mock_hospital.get("/scheduling/appointments", mrn=mrn)
    assert [r["ConfirmationNumber"] for r in rows] == [a["ConfirmationNumber"] for a in expected]
    assert {r["Status"] for r in rows} >= {"BOOKED", "COMPLETED"}
    assert "MRN" not in rows[0]


def test_scheduling_error_codes(sched, wsse, today) -> None:
    assert sched.call("BookAppointment", wsse(), SlotId="S9999999", MRN="100001").fault_code == (
        "SLOT-404"
    )
    slot = _first_free_slot(sched, wsse, today, "DR1005")
    assert sched.call(
        "BookAppointment", wsse(), SlotId=slot["SlotId"], MRN="999999"
    ).fault_code == ("SCHED-PAT-404")
    assert sched.call("CancelAppointment", wsse(), ConfirmationNumber="CN0000000").fault_code == (
        "APPT-404"
    )
    assert sched.call("GetAppointments", wsse(), MRN="999999").fault_code == "SCHED-PAT-404"


def test_reset_frees_booked_slots(sched, wsse, today, mock_hospital) -> None:
    slot = _first_free_slot(sched, wsse, today)
    sched.call("BookAppointment", wsse(), SlotId=slot["SlotId"], MRN="100023")
    mock_hospital.reset()
    assert _first_free_slot(sched, wsse, today)["SlotId"] == slot["SlotId"]
