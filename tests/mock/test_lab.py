"""The lab over real SOAP/HTTP: ASP.NET cookie sessions, errors inside normal answers."""

from __future__ import annotations

from bridge.mock import MockHospital
from tests.mock.clients import LAB, SoapClient

RESULT = ["AccessionNumber", "TestCode", "TestName", "Value", "Units", "RefLow", "RefHigh",
          "Flag", "ResultStatus", "CollectedAt", "ResultedAt"]  # fmt: skip
RANGE = {"FromDate": "2000-01-01", "ToDate": "2099-12-31"}


def _logon(lab: SoapClient, hospital: MockHospital) -> None:
    reply = lab.call("Logon", UserName=hospital.username, Password=hospital.password)
    assert reply.text("v:Status") == "OK", reply.text("v:Message")


def _status(reply) -> tuple[str | None, str | None]:
    return reply.text("v:Status"), reply.text("v:ErrorCode")


def _rows(reply) -> list[dict[str, str | None]]:
    return [{k: v or "" for k, v in r.items()} for r in reply.records("v:Results/v:LabResult")]


def test_logon_sets_an_aspnet_session_cookie(lab, mock_hospital) -> None:
    reply = lab.call("Logon", UserName=mock_hospital.username, Password=mock_hospital.password)
    assert reply.status == 200
    assert [c.tag.split("}")[1] for c in reply.body] == [
        "Status",
        "Message",
        "ErrorCode",
        "LogonResult",
    ]
    assert _status(reply) == ("OK", "")
    assert reply.text("v:LogonResult") == "true"
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith("ASP.NET_SessionId=")
    assert cookie.endswith("; path=/; HttpOnly")
    assert len(lab.http.cookies["ASP.NET_SessionId"]) == 24


def test_call_without_the_cookie_is_session_error_in_a_normal_answer(lab, mock_hospital) -> None:
    reply = lab.call("GetResults", MRN="100001", **RANGE)
    assert reply.status == 200
    assert _status(reply) == ("ERR", "LAB-SESSION")
    assert reply.text("v:Message") == "Session expired"
    assert reply.all("v:Results") == []
    assert mock_hospital.stats()["lab"]["faults"] == {"LAB-SESSION": 1}


def test_bad_logon_is_lab_auth_with_logon_result_false(lab) -> None:
    reply = lab.call("Logon", UserName="bridge", Password="nope")
    assert reply.status == 200
    assert _status(reply) == ("ERR", "LAB-AUTH")
    assert reply.text("v:LogonResult") == "false"
    assert "set-cookie" not in reply.headers


def test_get_results_happy_path_matches_the_side_door(lab, mock_hospital) -> None:
    _logon(lab, mock_hospital)
    reply = lab.call("GetResults", MRN="100001", **RANGE)
    assert _status(reply) == ("OK", "")
    rows = _rows(reply)
    expected = mock_hospital.get("/lab/results", mrn="100001")
    assert rows == expected[:50]
    assert reply.text("v:TotalRecords") == str(len(expected))
    assert all(list(r) == RESULT for r in rows)
    # Newest collection first.
    stamps = [r["CollectedAt"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)


def test_page_numbers_visit_every_result_once(lab, mock_hospital) -> None:
    _logon(lab, mock_hospital)
    mrn = max(
        (p["MRN"] for p in mock_hospital.sample_patients(40)),
        key=lambda m: len(mock_hospital.get("/lab/results", mrn=m)),
    )
    expected = mock_hospital.get("/lab/results", mrn=mrn)
    seen, page = [], 1
    while True:
        reply = lab.call("GetResults", MRN=mrn, **RANGE, PageNumber=page, PageSize=5)
        assert reply.text("v:TotalRecords") == str(len(expected))
        seen += _rows(reply)
        if page >= int(reply.text("v:TotalPages")):
            break
        page += 1
    assert seen == expected
    assert page == -(-len(expected) // 5)


def test_get_results_errors_come_back_in_the_body(lab, mock_hospital) -> None:
    _logon(lab, mock_hospital)
    unknown = lab.call("GetResults", MRN="999999", **RANGE)
    assert (unknown.status, *_status(unknown)) == (200, "ERR", "LAB-PAT-404")
    backwards = lab.call("GetResults", MRN="100001", FromDate="2026-02-01", ToDate="2026-01-01")
    assert _status(backwards) == ("ERR", "LAB-BAD-RANGE")
    assert mock_hospital.stats()["lab"]["faults"] == {"LAB-BAD-RANGE": 1, "LAB-PAT-404": 1}


def test_get_report_and_unknown_accession(lab, mock_hospital) -> None:
    _logon(lab, mock_hospital)
    accession = mock_hospital.get("/lab/results", mrn="100002")[0]["AccessionNumber"]
    reply = lab.call("GetReport", AccessionNumber=accession)
    assert _status(reply) == ("OK", "")
    expected = mock_hospital.get(f"/lab/reports/{accession}")
    assert reply.text("v:Report/v:MRN") == "100002"
    assert reply.text("v:Report/v:OrderedBy") == expected["OrderedBy"]
    assert len(reply.all("v:Report/v:Results/v:LabResult")) == len(expected["Results"])

    missing = lab.call("GetReport", AccessionNumber="A99-0000000")
    assert _status(missing) == ("ERR", "LAB-ACC-404")
    assert missing.all("v:Report") == []


def test_logoff_ends_the_session(lab, mock_hospital) -> None:
    _logon(lab, mock_hospital)
    assert _status(lab.call("Logoff")) == ("OK", "")
    assert _status(lab.call("GetResults", MRN="100001", **RANGE)) == ("ERR", "LAB-SESSION")
    stats = mock_hospital.stats()["lab"]
    assert (stats["logins"], stats["logouts"], stats["active_sessions"]) == (1, 1, 0)


def test_expired_sessions_answer_lab_session(lab, mock_hospital) -> None:
    _logon(lab, mock_hospital)
    mock_hospital.expire_sessions(system="lab")
    assert _status(lab.call("GetReport", AccessionNumber="A26-0010001")) == ("ERR", "LAB-SESSION")


def test_injected_faults_are_lab_internal_in_the_body(lab, mock_hospital) -> None:
    _logon(lab, mock_hospital)
    mock_hospital.inject_faults(system="lab", fault_rate=1.0)
    reply = lab.call("GetResults", MRN="100001", **RANGE)
    assert (reply.status, *_status(reply)) == (200, "ERR", "LAB-INTERNAL")
    # The EHR is untouched.
    assert mock_hospital.faults()["ehr"]["fault_rate"] == 0.0


def test_schema_invalid_request_is_a_soap_fault(lab, mock_hospital) -> None:
    _logon(lab, mock_hospital)
    reply = lab.call("GetResults", MRN="100001", **RANGE, PageNumber="first")
    assert reply.status == 500
    assert reply.fault_code == "LAB-BAD-REQUEST"


def test_lab_has_its_own_session_cap(small_hospital, http) -> None:
    small_hospital.reset()
    lab = SoapClient(small_hospital.lab_url, LAB, http)
    for _ in range(2):
        reply = lab.call("Logon", UserName="bridge", Password="bridge-dev-password")
        assert _status(reply) == ("OK", "")
    reply = lab.call("Logon", UserName="bridge", Password="bridge-dev-password")
    assert _status(reply) == ("ERR", "LAB-SESSION-LIMIT")


def test_fifty_concurrent_lab_calls_run_in_parallel(lab, mock_hospital) -> None:
    import time
    from concurrent.futures import ThreadPoolExecutor

    _logon(lab, mock_hospital)
    mock_hospital.inject_faults(system="lab", latency_ms=300)

    def get(i: int) -> tuple[str | None, str | None]:
        return _status(lab.call("GetResults", MRN=str(100001 + i), **RANGE))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(get, range(50)))
    elapsed = time.monotonic() - started
    assert outcomes == [("OK", "")] * 50
    assert elapsed < 3, f"50 calls of 300 ms took {elapsed:.1f} s: not concurrent"
