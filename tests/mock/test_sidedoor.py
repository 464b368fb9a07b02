"""The JSON side door under /_mock/: stats, reset, fault injection, raw data."""

from __future__ import annotations

import time

import httpx
import pytest

from bridge.mock import MockHospital, MockHospitalError

SYSTEMS = ["ehr", "lab", "scheduling", "pharmacy", "billing"]
NO_FAULTS = {
    "latency_ms": 0.0,
    "fault_rate": 0.0,
    "refuse_seconds": 0.0,
    "write_fault": None,
    "write_delay_ms": 5000.0,
    "drop_calls": 0,
}


def test_stats_count_calls_logins_and_faults(ehr, mock_hospital: MockHospital) -> None:
    session_id = ehr.login()
    ehr.call("GetPatient", session_id, MRN="100001")
    ehr.call("GetPatient", session_id, MRN="999999")
    ehr.call("Login", Username="bridge", Password="nope")
    ehr.logout(session_id)

    stats = mock_hospital.stats()
    assert list(stats) == SYSTEMS
    assert stats["ehr"] == {
        "logins": 1,
        "login_failures": 1,
        "logouts": 1,
        "active_sessions": 0,
        "peak_sessions": 1,
        "calls": {"GetPatient": 2, "Login": 2, "Logout": 1},
        "faults": {"EHR-AUTH-FAILED": 1, "EHR-PAT-404": 1},
        "refused": 0,
        "write_faults": 0,
        "dropped": 0,
    }
    # The other systems saw nothing.
    assert all(stats[name]["calls"] == {} for name in SYSTEMS[1:])


def test_stats_track_active_and_peak_sessions(ehr, mock_hospital) -> None:
    first, second = ehr.login(), ehr.login()
    ehr.logout(first)
    stats = mock_hospital.stats()["ehr"]
    assert (stats["active_sessions"], stats["peak_sessions"]) == (1, 2)
    ehr.logout(second)
    assert mock_hospital.stats()["ehr"]["active_sessions"] == 0


def test_fault_rate_one_faults_every_call_but_login(ehr, mock_hospital) -> None:
    mock_hospital.inject_faults(fault_rate=1.0)
    session_id = ehr.login()
    reply = ehr.call("GetPatient", session_id, MRN="100001")
    assert reply.status == 500
    assert reply.fault_code == "EHR-INTERNAL"
    assert reply.root.findtext(".//faultcode") == "soap11env:Server"
    assert mock_hospital.stats()["ehr"]["faults"] == {"EHR-INTERNAL": 1}

    mock_hospital.clear_faults()
    assert ehr.call("GetPatient", session_id, MRN="100001").status == 200


def test_fault_rate_is_deterministic(ehr, mock_hospital) -> None:
    def outcomes() -> list[bool]:
        mock_hospital.reset()
        session_id = ehr.login()
        mock_hospital.inject_faults(fault_rate=0.5)
        return [ehr.call("GetPatient", session_id, MRN="100001").status == 200 for _ in range(20)]

    first = outcomes()
    assert first == outcomes()
    assert 0 < sum(first) < 20


def test_refuse_seconds_answers_503_then_recovers(ehr, mock_hospital, http) -> None:
    mock_hospital.inject_faults(system="ehr", refuse_seconds=0.5)
    response = http.post(mock_hospital.ehr_url, content=b"<x/>")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert "Service Unavailable" in response.text
    assert mock_hospital.stats()["ehr"]["refused"] == 1

    time.sleep(0.6)
    ehr.login()
    assert mock_hospital.faults()["ehr"]["refuse_seconds"] == 0


def test_latency_delays_each_call(ehr, mock_hospital) -> None:
    mock_hospital.inject_faults(latency_ms=200)
    started = time.monotonic()
    ehr.login()
    assert time.monotonic() - started >= 0.2


def test_reset_clears_stats_sessions_and_faults(ehr, mock_hospital) -> None:
    session_id = ehr.login()
    mock_hospital.inject_faults(latency_ms=50, fault_rate=0.5)
    mock_hospital.reset()

    stats = mock_hospital.stats()["ehr"]
    assert stats["logins"] == stats["active_sessions"] == stats["peak_sessions"] == 0
    assert stats["calls"] == {}
    assert mock_hospital.faults() == {name: NO_FAULTS for name in SYSTEMS}
    # The session is gone, not expired.
    assert ehr.call("GetPatient", session_id, MRN="100001").fault_code == "EHR-SESSION-INVALID"


def test_reset_answers_ok(mock_hospital, http) -> None:
    response = http.post(mock_hospital.url + "/_mock/reset")
    assert response.json() == {"ok": True}


def test_faults_post_get_delete(mock_hospital, http) -> None:
    url = mock_hospital.url + "/_mock/faults"
    set_ = http.post(url, json={"latency_ms": 5, "fault_rate": 0.25})
    assert set_.status_code == 200
    expected = {**NO_FAULTS, "latency_ms": 5.0, "fault_rate": 0.25}
    assert set_.json() == {name: expected for name in SYSTEMS}
    # Keys left out keep their value.
    http.post(url, json={"fault_rate": 0.5})
    assert http.get(url).json()["ehr"]["latency_ms"] == 5.0
    cleared = http.delete(url).json()
    assert cleared == {name: NO_FAULTS for name in SYSTEMS}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"[1, 2]", "body must be a JSON object"),
        (b'{"fault_rate": 1.5}', "'fault_rate' must be between 0 and 1, got 1.5"),
        (b'{"latency_ms": -1}', "'latency_ms' must be between 0 and 600000, got -1"),
        (b'{"latency_ms": 600001}', "'latency_ms' must be between 0 and 600000, got 600001"),
        (b'{"refuse_seconds": -2}', "'refuse_seconds' must be >= 0, got -2"),
        # Python's JSON reads these; the side door must not store them.
        (b'{"fault_rate": NaN}', "'fault_rate' must be a number, got NaN"),
        (b'{"latency_ms": Infinity}', "'latency_ms' must be a number, got Infinity"),
        (b'{"refuse_seconds": Infinity}', "'refuse_seconds' must be a number, got Infinity"),
        (b'{"write_delay_ms": -Infinity}', "'write_delay_ms' must be a number, got -Infinity"),
        (b'{"latency_ms": "slow"}', "'latency_ms' must be a number, got \"slow\""),
        (b'{"refuse_seconds": true}', "'refuse_seconds' must be a number, got true"),
        (b'{"expire_sessions": 1}', "'expire_sessions' must be true or false, got 1"),
        (
            b'{"system": "radiology"}',
            'unknown system "radiology"; known: '
            "['billing', 'ehr', 'lab', 'pharmacy', 'scheduling']",
        ),
        (b'{"latency": 5}', "unknown keys ['latency']"),
    ],
)
def test_faults_bad_input_answers_400(mock_hospital, http, body: bytes, message: str) -> None:
    response = http.post(mock_hospital.url + "/_mock/faults", content=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    # Nothing was stored: the settings still read back as JSON, unchanged.
    assert mock_hospital.faults() == {name: NO_FAULTS for name in SYSTEMS}


def test_latency_at_its_maximum_is_accepted_and_cleared(mock_hospital) -> None:
    answer = mock_hospital.inject_faults(system="billing", latency_ms=600_000)
    assert answer["billing"]["latency_ms"] == 600_000.0
    mock_hospital.clear_faults()
    assert mock_hospital.faults()["billing"] == NO_FAULTS


def test_patients_lists_raw_records_with_limit_and_offset(mock_hospital) -> None:
    records = mock_hospital.sample_patients(3, offset=10)
    assert [r["MRN"] for r in records] == ["100011", "100012", "100013"]
    assert set(records[0]) >= {"MRN", "Name", "DOB", "Sex", "DeceasedFlag"}
    assert mock_hospital.patient("100012") == records[1]


def test_patients_unknown_mrn_answers_404(mock_hospital, http) -> None:
    response = http.get(mock_hospital.url + "/_mock/patients/999999")
    assert response.status_code == 404
    assert response.json() == {"error": "no patient with that MRN"}


@pytest.mark.parametrize("query", ["limit=-1", "limit=ten", "offset=-5"])
def test_patients_bad_query_answers_400(mock_hospital, http, query: str) -> None:
    response = http.get(mock_hospital.url + "/_mock/patients?" + query)
    assert response.status_code == 400
    assert "must be a non-negative integer" in response.json()["error"]


def test_side_door_is_not_soap(mock_hospital) -> None:
    # The SOAP service does not answer side-door paths and vice versa.
    assert httpx.get(mock_hospital.url + "/_mock/nothing").status_code == 404
    assert httpx.get(mock_hospital.ehr_url + "?wsdl").status_code == 200


# -- every system ------------------------------------------------------------------


def test_info_describes_the_hospital(mock_hospital, today) -> None:
    info = mock_hospital.info()
    assert (info["seed"], info["patients"], info["timezone"]) == (42, 5000, "America/New_York")
    assert info["today"] == today.isoformat()
    assert list(info["systems"]) == SYSTEMS
    assert info["systems"]["scheduling"]["soap"] == "1.2"
    assert info["systems"]["lab"]["path"] == "/lab"


@pytest.mark.parametrize(
    ("system", "operation", "code"),
    [
        ("scheduling", "GetProviders", "SCHED-INTERNAL"),
        ("pharmacy", "OpenSession", None),
        ("billing", "GetClaimStatus", "BILL-INTERNAL"),
    ],
)
def test_fault_rate_applies_to_the_named_system_only(
    mock_hospital, sched, bill, rx, wsse, system, operation, code
) -> None:
    mock_hospital.inject_faults(system=system, fault_rate=1.0)
    if system == "scheduling":
        reply = sched.call(operation, wsse())
    elif system == "billing":
        reply = bill.call(
            operation, UserId="bridge", Password="bridge-dev-password", ClaimNumber="X"
        )
    else:
        # Opening a session is never failed on purpose; using it is.
        ticket = rx.call(operation, User="bridge", Pass="bridge-dev-password").text("v:Ticket")
        reply = rx.call("GetPrescriptions", Ticket=ticket, MRN="100001")
        code = "RX-INTERNAL"
    assert (reply.status, reply.fault_code) == (500, code)
    assert mock_hospital.stats()[system]["faults"] == {code: 1}
    others = [name for name in SYSTEMS if name != system]
    assert all(mock_hospital.faults()[name]["fault_rate"] == 0.0 for name in others)


def test_refuse_seconds_per_system(mock_hospital, http, ehr) -> None:
    mock_hospital.inject_faults(system="billing", refuse_seconds=5)
    assert http.post(mock_hospital.billing_url, content=b"<x/>").status_code == 503
    assert http.get(mock_hospital.wsdl_url("billing")).status_code == 503
    ehr.login()  # the EHR answers as usual
    assert mock_hospital.stats()["billing"]["refused"] == 2


@pytest.mark.parametrize(
    "path",
    [
        "/_mock/ehr/allergies",
        "/_mock/ehr/problems",
        "/_mock/ehr/medications",
        "/_mock/ehr/vitals",
        "/_mock/lab/results",
        "/_mock/scheduling/appointments",
        "/_mock/pharmacy/prescriptions",
        "/_mock/billing/claims",
    ],
)
def test_per_patient_views_need_a_known_mrn(mock_hospital, http, path) -> None:
    assert http.get(mock_hospital.url + path).json() == {
        "error": "'mrn' is required, e.g. ?mrn=100001"
    }
    assert http.get(mock_hospital.url + path, params={"mrn": "999999"}).status_code == 404
    rows = mock_hospital.get(path, mrn="100001", limit=2)
    assert isinstance(rows, list) and len(rows) <= 2


@pytest.mark.parametrize(
    "path",
    [
        "/_mock/lab/reports/A00-0000000",
        "/_mock/scheduling/appointments/CN0000000",
        "/_mock/billing/claims/CLM-1999-000001",
    ],
)
def test_record_views_answer_404_for_unknown_ids(mock_hospital, http, path) -> None:
    assert http.get(mock_hospital.url + path).status_code == 404


def test_slot_and_provider_views(mock_hospital, http) -> None:
    providers = mock_hospital.get("/scheduling/providers")
    assert [p["ProviderId"] for p in providers][:2] == ["DR1001", "DR1002"]
    free = mock_hospital.get("/scheduling/slots", provider="DR1001", status="FREE")
    booked = mock_hospital.get("/scheduling/slots", provider="DR1001", status="BOOKED")
    assert free and booked
    assert {s["Status"] for s in free} == {"FREE"}
    assert all("ConfirmationNumber" in s for s in booked)
    bad = http.get(mock_hospital.url + "/_mock/scheduling/slots", params={"status": "OPEN"})
    assert bad.status_code == 400


def test_reset_clears_everything_written_through_soap(
    mock_hospital, ehr, sched, bill, wsse, today
) -> None:
    sid = ehr.login()
    body = (
        "<e:MRN>100040</e:MRN><e:Readings><e:Reading><e:TypeCode>HR</e:TypeCode>"
        "<e:Value>70</e:Value><e:Unit>/min</e:Unit><e:TakenAt>11/20/2026 07:00:00</e:TakenAt>"
        "</e:Reading></e:Readings>"
    )
    vitals_before = mock_hospital.get("/ehr/vitals", mrn="100040")
    assert ehr.post(ehr.envelope("RecordVitals", body, sid)).status == 200
    slot = mock_hospital.get("/scheduling/slots", provider="DR1003", status="FREE", limit=1)[0]
    confirmation = sched.call("BookAppointment", wsse(), SlotId=slot["SlotId"], MRN="100040").text(
        "v:ConfirmationNumber"
    )
    seeded = next(
        a
        for a in mock_hospital.get("/scheduling/appointments", mrn="100041")
        + mock_hospital.get("/scheduling/appointments", mrn="100042")
        + mock_hospital.get("/scheduling/appointments", mrn="100043")
        if a["Status"] == "BOOKED"
    )
    sched.call("CancelAppointment", wsse(), ConfirmationNumber=seeded["ConfirmationNumber"])
    claims_before = mock_hospital.get("/billing/claims", mrn="100040")
    claim = bill.post(
        bill.envelope(
            "SubmitClaim",
            "<v:UserId>bridge</v:UserId><v:Password>bridge-dev-password</v:Password>"
            "<v:MRN>100040</v:MRN><v:EncounterDate>20240102</v:EncounterDate>"
            "<v:DiagnosisCodes><v:Code>Z00.00</v:Code></v:DiagnosisCodes>"
            "<v:ProcedureCodes><v:Code>99396</v:Code></v:ProcedureCodes><v:Amount>175.00</v:Amount>",
        )
    )
    assert claim.status == 200
    assert len(mock_hospital.get("/billing/claims", mrn="100040")) == len(claims_before) + 1

    mock_hospital.reset()

    assert mock_hospital.get("/ehr/vitals", mrn="100040") == vitals_before
    with pytest.raises(MockHospitalError, match="-> 404"):
        mock_hospital.get(f"/scheduling/appointments/{confirmation}")
    reseeded = mock_hospital.get(f"/scheduling/appointments/{seeded['ConfirmationNumber']}")
    assert reseeded["Status"] == "BOOKED"
    assert slot["SlotId"] in {
        s["SlotId"]
        for s in mock_hospital.get("/scheduling/slots", provider="DR1003", status="FREE")
    }
    assert mock_hospital.get("/billing/claims", mrn="100040") == claims_before
    assert all(stats["calls"] == {} for stats in mock_hospital.stats().values())


# -- lost answers: dropped calls and write faults ----------------------------------

_READING = (
    "<e:MRN>100010</e:MRN><e:Readings><e:Reading><e:TypeCode>HR</e:TypeCode>"
    "<e:Value>61</e:Value><e:Unit>/min</e:Unit><e:TakenAt>11/20/2026 07:00:00</e:TakenAt>"
    "<e:DeviceId>LOST-1</e:DeviceId></e:Reading></e:Readings>"
)


def _lost(mock_hospital: MockHospital) -> list[dict[str, str]]:
    rows = mock_hospital.get("/ehr/vitals", mrn="100010")
    return [r for r in rows if r.get("DeviceId") == "LOST-1"]


def test_drop_calls_breaks_the_connection_of_the_next_calls_only(ehr, mock_hospital) -> None:
    sid = ehr.login()
    mock_hospital.inject_faults(system="ehr", drop_calls=1)
    assert mock_hospital.faults()["ehr"]["drop_calls"] == 1
    with pytest.raises(httpx.TransportError):
        ehr.call("GetPatient", sid, MRN="100001")
    assert ehr.call("GetPatient", sid, MRN="100001").status == 200
    stats = mock_hospital.stats()["ehr"]
    assert stats["dropped"] == 1
    assert stats["calls"]["GetPatient"] == 1  # the dropped call never reached the EHR


@pytest.mark.parametrize(
    ("fault", "stored"),
    [("apply-then-drop", 1), ("drop-before-apply", 0)],
)
def test_write_fault_drops_the_answer_of_writes_after_or_before_applying(
    ehr, mock_hospital, fault: str, stored: int
) -> None:
    sid = ehr.login()
    mock_hospital.inject_faults(system="ehr", write_fault=fault)
    with pytest.raises(httpx.TransportError):
        ehr.post(ehr.envelope("RecordVitals", _READING, sid))
    assert len(_lost(mock_hospital)) == stored
    # Reads are not writes: they are answered.
    assert ehr.call("GetPatient", sid, MRN="100001").status == 200
    assert mock_hospital.stats()["ehr"]["write_faults"] == 1


def test_write_fault_apply_then_delay_answers_late(ehr, mock_hospital, http) -> None:
    sid = ehr.login()
    mock_hospital.inject_faults(system="ehr", write_fault="apply-then-delay", write_delay_ms=3000)
    with pytest.raises(httpx.ReadTimeout):
        http.post(
            mock_hospital.ehr_url,
            content=ehr.envelope("RecordVitals", _READING, sid),
            headers={"Content-Type": "text/xml"},
            timeout=0.5,
        )
    assert len(_lost(mock_hospital)) == 1  # stored before the answer was held back


def test_write_fault_null_clears_it(ehr, mock_hospital) -> None:
    mock_hospital.inject_faults(write_fault="apply-then-drop", write_delay_ms=10)
    assert mock_hospital.faults()["billing"]["write_fault"] == "apply-then-drop"
    mock_hospital.inject_faults(write_fault=None)
    assert mock_hospital.faults()["billing"] == {**NO_FAULTS, "write_delay_ms": 10.0}
    sid = ehr.login()
    assert ehr.post(ehr.envelope("RecordVitals", _READING, sid)).status == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"write_fault": "sometimes"},
            "'write_fault' must be one of ['apply-then-delay', 'apply-then-drop', "
            "'drop-before-apply'] or null, got \"sometimes\"",
        ),
        ({"drop_calls": -1}, "'drop_calls' must be a non-negative integer, got -1"),
        ({"drop_calls": True}, "'drop_calls' must be a non-negative integer, got true"),
        ({"write_delay_ms": "5"}, "'write_delay_ms' must be a number, got \"5\""),
    ],
)
def test_write_fault_bad_values_are_400(mock_hospital, http, body, message) -> None:
    response = http.post(mock_hospital.url + "/_mock/faults", json=body)
    assert response.status_code == 400
    assert response.json() == {"error": message}
