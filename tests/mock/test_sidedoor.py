"""The JSON side door under /_mock/: stats, reset, fault injection, raw data."""

from __future__ import annotations

import time

import httpx
import pytest

from bridge.mock import MockHospital


def test_stats_count_calls_logins_and_faults(ehr, mock_hospital: MockHospital) -> None:
    session_id = ehr.login()
    ehr.call("GetPatient", session_id, MRN="100001")
    ehr.call("GetPatient", session_id, MRN="999999")
    ehr.call("Login", Username="bridge", Password="nope")
    ehr.logout(session_id)

    assert mock_hospital.stats() == {
        "ehr": {
            "logins": 1,
            "login_failures": 1,
            "logouts": 1,
            "active_sessions": 0,
            "peak_sessions": 1,
            "calls": {"GetPatient": 2, "Login": 2, "Logout": 1},
            "faults": {"EHR-AUTH-FAILED": 1, "EHR-PAT-404": 1},
            "refused": 0,
        }
    }


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
    assert mock_hospital.faults() == {
        "ehr": {"latency_ms": 0.0, "fault_rate": 0.0, "refuse_seconds": 0.0}
    }
    # The session is gone, not expired.
    assert ehr.call("GetPatient", session_id, MRN="100001").fault_code == "EHR-SESSION-INVALID"


def test_reset_answers_ok(mock_hospital, http) -> None:
    response = http.post(mock_hospital.url + "/_mock/reset")
    assert response.json() == {"ok": True}


def test_faults_post_get_delete(mock_hospital, http) -> None:
    url = mock_hospital.url + "/_mock/faults"
    set_ = http.post(url, json={"latency_ms": 5, "fault_rate": 0.25})
    assert set_.status_code == 200
    assert set_.json() == {"ehr": {"latency_ms": 5.0, "fault_rate": 0.25, "refuse_seconds": 0.0}}
    # Keys left out keep their value.
    http.post(url, json={"fault_rate": 0.5})
    assert http.get(url).json()["ehr"]["latency_ms"] == 5.0
    cleared = http.delete(url).json()
    assert cleared == {"ehr": {"latency_ms": 0.0, "fault_rate": 0.0, "refuse_seconds": 0.0}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"[1, 2]", "body must be a JSON object"),
        (b'{"fault_rate": 1.5}', "'fault_rate' must be between 0 and 1, got 1.5"),
        (b'{"latency_ms": -1}', "'latency_ms' must be >= 0, got -1"),
        (b'{"latency_ms": "slow"}', "'latency_ms' must be a number, got \"slow\""),
        (b'{"refuse_seconds": true}', "'refuse_seconds' must be a number, got true"),
        (b'{"expire_sessions": 1}', "'expire_sessions' must be true or false, got 1"),
        (b'{"system": "lab"}', "unknown system \"lab\"; known: ['ehr']"),
        (b'{"latency": 5}', "unknown keys ['latency']"),
    ],
)
def test_faults_bad_input_answers_400(mock_hospital, http, body: bytes, message: str) -> None:
    response = http.post(mock_hospital.url + "/_mock/faults", content=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    assert mock_hospital.faults()["ehr"]["fault_rate"] == 0.0


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
