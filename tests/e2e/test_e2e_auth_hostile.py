"""Hostile input through a real gateway: each answer an OperationOutcome with its status.

Before these fixes each case here was a 500 (with the connection dropped), or
a token whose patient claim the gateway turned into searches.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import ADMIN_TOKEN, Gateway

pytestmark = pytest.mark.e2e

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _client(gateway: Gateway, token: str) -> httpx.Client:
    client = httpx.Client(
        base_url=gateway.base, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    gateway.clients.append(client)
    return client


def _admin(gateway: Gateway) -> httpx.Client:
    client = httpx.Client(
        base_url=gateway.base.removesuffix("/fhir"),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    gateway.clients.append(client)
    return client


@pytest.mark.parametrize(
    "category", [[{"coding": ["laboratory"]}], [{"coding": "laboratory"}], {"coding": [None]}]
)
def test_granular_write_with_a_malformed_coding_is_403(
    gateway: Gateway, category: Any, fhir: Any
) -> None:
    token = gateway.issuer.mint(
        scope="user/Observation.cruds?category=laboratory", client_id="lab-app"
    )
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "glucose"},
        "subject": {"reference": "Patient/100001"},
        "category": category,
    }
    reply = _client(gateway, token).post("/Observation", json=body, headers=FHIR_JSON)

    assert reply.status_code == 403, reply.text
    assert fhir(reply.json())["issue"][0]["code"] == "forbidden"


def test_a_patient_claim_that_is_not_a_fhir_id_is_401(gateway: Gateway, fhir: Any) -> None:
    token = gateway.issuer.mint(
        scope="patient/Observation.rs", client_id="portal", patient="100001,100002"
    )
    reply = _client(gateway, token).get("/Observation", params={"patient": "100002"})

    assert reply.status_code == 401, reply.text
    assert reply.headers["www-authenticate"] == 'Bearer realm="fhir", error="invalid_token"'
    assert fhir(reply.json())["issue"][0]["code"] == "login"
    assert "100002" not in reply.text


def test_a_revocation_lasting_past_the_calendar_is_400_and_the_list_still_answers(
    gateway: Gateway, fhir: Any
) -> None:
    admin = _admin(gateway)
    reply = admin.post("/admin/revocations", json={"client_id": "x", "expires_in": 2**62})

    assert reply.status_code == 400, reply.text
    assert "expires_in" in fhir(reply.json())["issue"][0]["diagnostics"]
    assert admin.get("/admin/revocations").status_code == 200


def test_a_consent_for_a_class_nobody_has_is_422(gateway: Gateway, fhir: Any) -> None:
    token = gateway.issuer.mint(scope="user/Consent.cruds", client_id="privacy-office")
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/100001"},
        "provision": {
            "type": "permit",
            "provision": [{"type": "deny", "class": [{"code": "observation"}]}],
        },
    }
    reply = _client(gateway, token).post("/Consent", json=consent, headers=FHIR_JSON)

    assert reply.status_code == 422, reply.text
    issue = fhir(reply.json())["issue"][0]
    assert issue["expression"] == ["Consent.provision.provision[0].class[0].code"]


def test_a_consent_from_a_token_without_consent_scopes_is_403_before_it_is_read(
    gateway: Gateway, fhir: Any
) -> None:
    # Its content is for those allowed to write Consents: no 422 quoting it back.
    token = gateway.issuer.mint(scope="patient/Observation.rs", client_id="app", patient="100001")
    code = "Nothing" + "x" * 200_000
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "patient": {"reference": "Patient/100001"},
        "provision": {"type": "deny", "class": [{"code": code}]},
    }
    reply = _client(gateway, token).post("/Consent", json=consent, headers=FHIR_JSON)

    assert reply.status_code == 403, reply.text[:300]
    assert len(reply.content) < 1000
    assert fhir(reply.json())["issue"][0]["code"] == "forbidden"


def test_a_token_without_consent_scopes_learns_nothing_of_which_consents_exist(
    gateway: Gateway, fhir: Any
) -> None:
    token = gateway.issuer.mint(scope="patient/Observation.rs", client_id="app", patient="100001")
    client = _client(gateway, token)
    for method in ("GET", "PUT", "DELETE"):
        reply = client.request(
            method, "/Consent/00000000-0000-0000-0000-000000000000", headers=FHIR_JSON
        )
        assert reply.status_code == 403, (method, reply.text)
        assert fhir(reply.json())["issue"][0]["code"] == "forbidden"
