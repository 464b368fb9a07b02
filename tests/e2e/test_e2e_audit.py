"""The audit trail: one AuditEvent per request, committed before the answer.

Every /fhir request, answered or refused, leaves one AuditEvent (the IHE
Basic Audit Log Patterns shape) in the gateway's store; auditors search it
by patient and date; a gateway killed with SIGKILL has lost none of the
events of the requests it answered.
"""

from __future__ import annotations

import signal
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.auditevent import stored_event
from bridge.mock import MockHospital
from tests.support import Gateway, start_gateway

pytestmark = pytest.mark.e2e

AUDITOR = "user/AuditEvent.rs"


def _request_id(event: dict[str, Any]) -> str | None:
    for extension in event.get("extension", []):
        if extension["url"] == "urn:bridge:request-id":
            return str(extension["valueString"])
    return None


def _events(gateway: Gateway, **params: Any) -> list[dict[str, Any]]:
    auditor = gateway.client(AUDITOR)
    found: list[dict[str, Any]] = []
    reply = auditor.get("/AuditEvent", params={"_count": 500, **params})
    while True:
        assert reply.status_code == 200, reply.text
        bundle = reply.json()
        found += [e["resource"] for e in bundle.get("entry", [])]
        nxt = next((x["url"] for x in bundle["link"] if x["relation"] == "next"), None)
        if nxt is None:
            return found
        reply = auditor.get(nxt)


def test_every_request_leaves_exactly_one_audit_event(gateway: Gateway, fhir: Any) -> None:
    run = uuid.uuid4().hex[:8]
    reader = gateway.client("user/Patient.rs user/Observation.crus")
    calls = [
        (reader, "GET", "/Patient/100001", 200),
        (reader, "GET", "/Patient/999999999", 404),
        (reader, "GET", "/Patient", 200),
        (reader, "GET", "/Condition?patient=100001", 403),
        (gateway.anonymous(), "GET", "/Patient/100001", 401),
        (reader, "GET", "/metadata", 200),
        (reader, "DELETE", "/Patient/100001", 405),
    ]
    sent = {}
    for i, (client, method, path, status) in enumerate(calls):
        rid = f"audit-{run}-{i}"
        params = {"name": "smith", "_count": 3} if path == "/Patient" else None
        reply = client.request(method, path, params=params, headers={"X-Request-ID": rid})
        assert reply.status_code == status, (path, reply.text)
        sent[rid] = (method, path, status)
    today = datetime.now(UTC).date().isoformat()
    events = [e for e in _events(gateway, date=today) if (_request_id(e) or "") in sent]
    assert sorted(_request_id(e) for e in events) == sorted(sent)
    for event in events:
        fhir(event)
        method, path, status = sent[_request_id(event) or ""]
        assert event["outcomeDesc"].startswith(f"HTTP {status}")
        assert event["outcome"] == ("0" if status < 400 else "4")
        assert event["type"]["code"] == "rest"


def test_an_audit_event_says_who_which_patient_what_and_which_legacy_calls(
    gateway: Gateway, fhir: Any
) -> None:
    rid = f"audit-read-{uuid.uuid4().hex[:8]}"
    client = gateway.client("user/Patient.rs")
    assert client.get("/Patient/100003", headers={"X-Request-ID": rid}).status_code == 200
    (event,) = [e for e in _events(gateway, patient="100003") if _request_id(e) == rid]
    fhir(event)
    assert event["subtype"][0]["code"] == "read"
    assert event["action"] == "R"
    assert event["meta"]["profile"][0].endswith("IHE.BasicAudit.Read")
    app = event["agent"][0]["who"]["identifier"]
    assert app == {"system": "urn:ietf:params:oauth:client-id", "value": "test-app"}
    assert event["agent"][1]["requestor"] is True
    references = [e.get("what", {}).get("reference") for e in event["entity"]]
    assert "Patient/100003" in references
    legacy = [d["valueString"] for e in event["entity"] for d in e.get("detail", [])]
    assert legacy and all(op.startswith("hospital:") for op in legacy)


def test_a_search_is_audited_under_every_patient_it_returned(gateway: Gateway) -> None:
    rid = f"audit-search-{uuid.uuid4().hex[:8]}"
    reply = gateway.client("user/Patient.rs").get(
        "/Patient", params={"_count": 5}, headers={"X-Request-ID": rid}
    )
    assert reply.status_code == 200
    returned = [e["resource"]["id"] for e in reply.json()["entry"]]
    assert len(returned) == 5
    for patient in returned:
        assert rid in {_request_id(e) for e in _events(gateway, patient=patient)}
    (event,) = [e for e in _events(gateway, patient=returned[0]) if _request_id(e) == rid]
    query = next(e for e in event["entity"] if e.get("role", {}).get("code") == "24")
    assert "query" in query


def test_audit_search_by_date_and_patient_scope(gateway: Gateway) -> None:
    client = gateway.client("patient/Patient.rs patient/AuditEvent.rs", patient="100021")
    assert client.get("/Patient/100021").status_code == 200
    mine = client.get("/AuditEvent").json()
    assert mine.get("entry")
    for entry in mine["entry"]:
        refs = [e.get("what", {}).get("reference") for e in entry["resource"]["entity"]]
        assert "Patient/100021" in refs
    assert client.get("/AuditEvent", params={"patient": "100022"}).status_code == 403
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    assert (
        "entry"
        not in gateway.client(AUDITOR)
        .get("/AuditEvent", params={"patient": "100021", "date": f"ge{tomorrow}"})
        .json()
    )
    assert (
        gateway.client(AUDITOR).get("/AuditEvent", params={"date": "yesterday"}).status_code == 400
    )
    # Reading the trail needs a scope for it.
    assert gateway.client("user/Patient.rs").get("/AuditEvent").status_code == 403
    one = mine["entry"][0]["resource"]
    assert client.get(f"/AuditEvent/{one['id']}").json()["id"] == one["id"]


def test_no_audit_event_is_lost_when_the_gateway_is_killed(
    tmp_path: Path, mock_hospital: MockHospital
) -> None:
    with start_gateway(tmp_path, mock_hospital.ehr_url) as gateway:
        client = gateway.client("user/Patient.rs")
        answered = []
        for i in range(60):
            rid = f"kill-{i}"
            if client.get(f"/Patient/{100001 + i}", headers={"X-Request-ID": rid}).is_success:
                answered.append(rid)
        gateway.process.send_signal(signal.SIGKILL)
        gateway.process.wait()
        store = gateway.log_path.parent / "store.db"
    assert len(answered) == 60
    with sqlite3.connect(store) as db:
        bodies = [row[0] for row in db.execute("SELECT body FROM audit_events")]
    recorded = [_request_id(stored_event(b)) for b in bodies]
    assert all(recorded.count(rid) == 1 for rid in answered)


def test_the_trail_works_on_postgresql(
    tmp_path: Path, mock_hospital: MockHospital, postgres_url: str
) -> None:
    with start_gateway(
        tmp_path, mock_hospital.ehr_url, extra={"store": {"url": postgres_url}}
    ) as gw:
        client = gw.client("user/Patient.rs user/AuditEvent.rs")
        assert client.get("/Patient/100004", headers={"X-Request-ID": "pg-1"}).status_code == 200
        found = client.get("/AuditEvent", params={"patient": "100004"}).json()
        assert [_request_id(e["resource"]) for e in found["entry"]] == ["pg-1"]
        ready = httpx.get(gw.base.removesuffix("/fhir") + "/readyz").json()
        assert ready["store"] == "reachable"


def test_audit_events_are_forwarded_to_a_sink(tmp_path: Path, mock_hospital: MockHospital) -> None:
    import http.server
    import json
    import threading
    import time

    received: list[dict[str, Any]] = []

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink = f"http://127.0.0.1:{server.server_address[1]}/audit"
    try:
        with start_gateway(
            tmp_path, mock_hospital.ehr_url, extra={"audit": {"sink_url": sink}}
        ) as gateway:
            client = gateway.client("user/Patient.rs")
            assert client.get("/Patient/100005", headers={"X-Request-ID": "sink-1"}).is_success
            deadline = time.monotonic() + 10
            while not any(_request_id(e) == "sink-1" for e in received):
                assert time.monotonic() < deadline, "the sink never got the AuditEvent"
                time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()
    (event,) = [e for e in received if _request_id(e) == "sink-1"]
    assert event["resourceType"] == "AuditEvent"
    assert "Patient/100005" in [e.get("what", {}).get("reference") for e in event["entity"]]


def test_a_forwarded_address_is_recorded_only_from_a_trusted_proxy(
    gateway: Gateway, mock_hospital_server: MockHospital, tmp_path: Path
) -> None:
    """By default the client's address is the connection's peer: a client cannot
    put another address in the trail with X-Forwarded-For. With the proxy's
    address in `trusted_proxies`, the address it forwards is the client's."""
    extra = {"trusted_proxies": ["127.0.0.1"]}
    with start_gateway(tmp_path, mock_hospital_server.ehr_url, extra=extra) as proxied:
        for gw, address in ((gateway, "127.0.0.1"), (proxied, "203.0.113.9")):
            rid = f"fwd-{uuid.uuid4().hex[:8]}"
            headers = {"X-Request-ID": rid, "X-Forwarded-For": "203.0.113.9"}
            reply = gw.client("user/Patient.rs").get("/Patient/100002", headers=headers)
            assert reply.status_code == 200
            (event,) = [e for e in _events(gw, patient="100002") if _request_id(e) == rid]
            networks = [a["network"] for a in event["agent"] if "network" in a]
            assert networks == [{"address": address, "type": "2"}]
