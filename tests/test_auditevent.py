"""The stored facts of a request and the AuditEvent rendered from them."""

from __future__ import annotations

import orjson

from bridge.auditevent import AuditContext, facts, render_event, stored_event
from bridge.auth.scopes import parse_scopes
from bridge.auth.tokens import Principal


def _search() -> AuditContext:
    context = AuditContext(
        method="GET",
        path="/fhir/Patient",
        query=b"gender=female&_count=50",
        started=1_764_000_000.25,
        interaction="search-type",
        resource_type="Patient",
        resource_id=None,
    )
    context.patients.update(f"1000{n:02d}" for n in range(50))
    context.legacy += ["hospital.FindPatients", "hospital.FetchNext"]
    return context


def _state() -> dict[str, object]:
    principal = Principal(
        client_id="portal",
        subject="dr-1",
        patient=None,
        scopes=parse_scopes("user/*.rs"),
        token_id="jti-1",
    )
    return {"principal": principal, "request_id": "req-1"}


def test_a_search_of_50_patients_is_stored_in_a_small_row() -> None:
    row = facts(_search(), 200, _state(), ("10.0.0.7", 5555))
    stored = orjson.dumps(row)
    event = render_event(orjson.loads(stored))
    assert len(stored) < 900
    assert len(orjson.dumps(event)) > 6 * len(stored)


def test_the_rendered_event_says_who_which_patients_what_and_which_legacy_calls() -> None:
    event = stored_event(orjson.dumps(facts(_search(), 200, _state(), ("10.0.0.7", 5555))))
    assert event["resourceType"] == "AuditEvent"
    assert event["subtype"] == [
        {"system": "http://hl7.org/fhir/restful-interaction", "code": "search-type"}
    ]
    assert event["action"] == "E" and event["outcome"] == "0"
    assert event["recorded"] == "2025-11-24T16:00:00.250+00:00"
    app, user = event["agent"]
    assert app["who"]["identifier"]["value"] == "portal"
    assert app["network"] == {"address": "10.0.0.7", "type": "2"}
    assert user["who"]["identifier"]["value"] == "dr-1" and user["policy"] == ["jti-1"]
    assert user["type"]["coding"][0]["code"] == "PROV"
    patients = [e["what"]["reference"] for e in event["entity"] if "reference" in e["what"]]
    assert patients == [f"Patient/1000{n:02d}" for n in range(50)]
    query = next(e for e in event["entity"] if "query" in e)
    assert query["what"] == {"display": "Patient"}
    legacy = event["entity"][-1]["detail"]
    assert [d["valueString"] for d in legacy] == ["hospital.FindPatients", "hospital.FetchNext"]
    assert event["extension"] == [{"url": "urn:bridge:request-id", "valueString": "req-1"}]
    assert event["meta"]["profile"][0].endswith("IHE.BasicAudit.Query")


def test_an_unauthenticated_refusal_names_no_one() -> None:
    context = AuditContext("GET", "/fhir/Patient/1", b"", 1.0, "read", "Patient", "1")
    event = render_event(facts(context, 401, {}, None))
    assert event["outcome"] == "4"
    assert event["agent"] == [
        {
            "type": event["agent"][0]["type"],
            "who": {"display": "unauthenticated client"},
            "requestor": True,
        }
    ]
    assert event["entity"][0]["what"] == {"reference": "Patient/1"}


def test_an_audit_event_stored_whole_is_read_as_it_was() -> None:
    whole = {"resourceType": "AuditEvent", "id": "old-1", "recorded": "2026-01-01T00:00:00Z"}
    assert stored_event(orjson.dumps(whole).decode()) == whole
