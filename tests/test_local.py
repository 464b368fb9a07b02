"""The resources the gateway keeps itself (AuditEvent, Consent): the FHIR API's rules.

Negotiation, body limits and search parameters answer as on every other FHIR
route: an OperationOutcome with the right status, never a 500.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support import Gateway

pytestmark = pytest.mark.e2e

FHIR_JSON = {"Content-Type": "application/fhir+json"}
OFFICE = "user/Consent.cruds user/AuditEvent.rs user/Observation.crs"


def _consent(provision: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/100031"},
        "provision": provision,
    }


def _deny(levels: int) -> dict[str, Any]:
    """A permit holding `levels` deny provisions nested in one another (2 JSON levels each)."""
    provision: dict[str, Any] = {"type": "deny", "class": [{"code": "Observation"}]}
    for _ in range(levels - 1):
        provision = {"type": "deny", "provision": [provision]}
    actor = {
        "role": {"coding": [{"code": "IRCP"}]},
        "reference": {
            "identifier": {"system": "urn:ietf:params:oauth:client-id", "value": "nosy-app"}
        },
    }
    return {"type": "permit", "actor": [actor], "provision": [provision]}


def _outcome(reply: httpx.Response, status: int, fhir: Any) -> str:
    assert reply.status_code == status, reply.text
    outcome = fhir(reply.json())
    assert outcome["resourceType"] == "OperationOutcome"
    return str(outcome["issue"][0]["diagnostics"])


@pytest.fixture
def office(gateway: Gateway) -> httpx.Client:
    return gateway.client(OFFICE)


@pytest.fixture
def consent_id(office: httpx.Client) -> Any:
    reply = office.post("/Consent", json=_consent(_deny(1)), headers=FHIR_JSON)
    assert reply.status_code == 201, reply.text
    yield reply.json()["id"]
    office.delete(f"/Consent/{reply.json()['id']}")


def test_local_routes_answer_406_to_xml_as_every_fhir_route_does(
    office: httpx.Client, consent_id: str, fhir: Any
) -> None:
    event = office.get("/AuditEvent", params={"_count": 1}).json()["entry"][0]["resource"]
    body = _consent(_deny(1))
    requests = [
        ("GET", "/AuditEvent", None),
        ("GET", f"/AuditEvent/{event['id']}", None),
        ("GET", "/Consent?patient=100031", None),
        ("GET", f"/Consent/{consent_id}", None),
        ("POST", "/Consent", body),
        ("PUT", f"/Consent/{consent_id}", {**body, "id": consent_id}),
        ("DELETE", f"/Consent/{consent_id}", None),
    ]
    xml = {"Accept": "application/xml"}
    for method, path, sent in requests:
        for params, headers in (({"_format": "xml"}, FHIR_JSON), ({}, {**FHIR_JSON, **xml})):
            reply = office.request(method, path, json=sent, params=params, headers=headers)
            _outcome(reply, 406, fhir)
    # Nothing was stored or deleted on the way.
    assert office.get(f"/Consent/{consent_id}").json()["meta"]["versionId"] == "1"
    assert len(office.get("/Consent?patient=100031").json()["entry"]) == 1
    # JSON, asked for or not, still works.
    assert office.get("/AuditEvent", params={"_format": "json", "_count": 1}).status_code == 200
    assert office.get("/Consent?patient=100031", headers={"Accept": "*/*"}).status_code == 200


@pytest.mark.parametrize("levels", [41, 100, 500])
def test_a_consent_deeper_than_the_json_depth_limit_is_400_like_any_body(
    office: httpx.Client, consent_id: str, levels: int, fhir: Any
) -> None:
    # The same answer as any other route's body past limits.max_json_depth (64).
    deep_observation: dict[str, Any] = {"resourceType": "Observation"}
    for _ in range(70):
        deep_observation = {"resourceType": "Observation", "extension": [deep_observation]}
    expected = _outcome(
        office.post("/Observation", json=deep_observation, headers=FHIR_JSON), 400, fhir
    )
    assert expected == "The JSON body nests deeper than 64 levels."
    # Written out by hand: json.dumps itself gives out before 500 levels.
    deny = '{"type": "deny", "class": [{"code": "Observation"}]}'
    for _ in range(levels - 1):
        deny = '{"type": "deny", "provision": [' + deny + "]}"
    shallow = _consent(_deny(1))
    text = json.dumps(shallow).replace(json.dumps(shallow["provision"]["provision"][0]), deny)
    reply = office.post("/Consent", content=text, headers=FHIR_JSON)
    assert _outcome(reply, 400, fhir) == expected
    text = text.replace("{", f'{{"id": "{consent_id}", ', 1)
    reply = office.put(f"/Consent/{consent_id}", content=text, headers=FHIR_JSON)
    assert _outcome(reply, 400, fhir) == expected
    assert len(office.get("/Consent?patient=100031").json()["entry"]) == 1


def test_audit_search_dates_at_the_calendars_ends_are_answered(
    office: httpx.Client, fhir: Any
) -> None:
    for date in ("9999-12-31", "ge9999-12-31", "gt9999-12-31", "9999", "le9999-12"):
        reply = office.get("/AuditEvent", params={"date": date})
        assert reply.status_code == 200, reply.text
        bundle = fhir(reply.json())
        assert ("entry" in bundle) == (date == "le9999-12"), date
    reply = office.get("/AuditEvent", params={"date": "0001-01-01T00:00:00+14:00"})
    assert reply.status_code == 200 and "entry" not in reply.json()


@pytest.mark.parametrize("before", ["99999999999999999999999", "-1", "0", "soon"])
def test_audit_search_before_a_position_that_cannot_be_is_400_naming_it(
    office: httpx.Client, before: str, fhir: Any
) -> None:
    reply = office.get("/AuditEvent", params={"_before": before})
    assert _outcome(reply, 400, fhir) == (
        "_before: not a position in the audit trail; follow the Bundle's next link."
    )
    assert reply.json()["issue"][0]["expression"] == ["_before"]
