"""Patients' privacy choices (Consent) and revoked access, end to end.

A Consent in the gateway's store denies chosen data to chosen apps even when
their scopes allow it; a revocation cuts a token, an app, or an app's access
to one patient off at once, on every gateway sharing the store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import ADMIN_TOKEN, Gateway, start_gateway

pytestmark = pytest.mark.e2e

CLIENT_ID = "urn:ietf:params:oauth:client-id"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


def _client(gateway: Gateway, scope: str, *, client_id: str, patient: str | None = None) -> Any:
    token = gateway.issuer.mint(scope=scope, client_id=client_id, patient=patient)
    client = httpx.Client(
        base_url=gateway.base, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    gateway.clients.append(client)
    return client


def _consent(patient: str, *deny: dict[str, Any], actor: str | None = None) -> dict[str, Any]:
    provision: dict[str, Any] = {"type": "permit", "provision": list(deny)}
    if actor is not None:
        provision["actor"] = [
            {
                "role": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                        }
                    ]
                },
                "reference": {"identifier": {"system": CLIENT_ID, "value": actor}},
            }
        ]
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
        "patient": {"reference": f"Patient/{patient}"},
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": provision,
    }


def _labs_of(client: httpx.Client, patient: str) -> list[dict[str, Any]]:
    reply = client.get("/Observation", params={"patient": patient, "category": "laboratory"})
    assert reply.status_code == 200, reply.text
    return [e["resource"] for e in reply.json().get("entry", [])]


@pytest.fixture
def consents(gateway: Gateway) -> Iterator[list[str]]:
    """Consent ids a test creates, deleted after it (the gateway is shared)."""
    created: list[str] = []
    yield created
    admin = _client(gateway, "user/Consent.cruds", client_id="privacy-office")
    for cid in created:
        admin.delete(f"/Consent/{cid}")


def _patient_with_labs(gateway: Gateway) -> tuple[str, list[dict[str, Any]]]:
    clinician = _client(gateway, "user/Observation.rs", client_id="clinic")
    for mrn in range(100001, 100040):
        found = _labs_of(clinician, str(mrn))
        if found:
            return str(mrn), found
    raise AssertionError("no patient with lab results among the first 40")


def test_a_consent_withholds_lab_results_from_one_app_only(
    gateway: Gateway, consents: list[str], fhir: Any
) -> None:
    mrn, labs = _patient_with_labs(gateway)
    portal = _client(gateway, "patient/*.cruds", client_id="patient-portal", patient=mrn)
    deny_labs = {
        "type": "deny",
        "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}],
        "code": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}],
    }
    reply = portal.post(
        "/Consent",
        json=_consent(mrn, deny_labs, actor="wellness-app"),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert reply.status_code == 201, reply.text
    stored = fhir(reply.json())
    consents.append(stored["id"])
    assert reply.headers["location"].startswith(f"{gateway.base}/Consent/{stored['id']}")

    wellness = _client(gateway, "patient/Observation.rs", client_id="wellness-app", patient=mrn)
    other = _client(gateway, "patient/Observation.rs", client_id="other-app", patient=mrn)
    # The app the patient named sees none of the lab results; any other app sees them all.
    assert _labs_of(wellness, mrn) == []
    assert {o["id"] for o in _labs_of(other, mrn)} == {o["id"] for o in labs}

    # Listed under the patient; withdrawing it gives the data back at once.
    listed = portal.get("/Consent", params={"patient": mrn})
    assert listed.status_code == 200
    assert [e["resource"]["id"] for e in fhir(listed.json())["entry"]] == [stored["id"]]
    assert portal.delete(f"/Consent/{stored['id']}").status_code == 204
    consents.remove(stored["id"])
    assert {o["id"] for o in _labs_of(wellness, mrn)} == {o["id"] for o in labs}


def test_a_consent_denial_is_in_the_audit_trail(gateway: Gateway, consents: list[str]) -> None:
    mrn, _ = _patient_with_labs(gateway)
    office = _client(gateway, "user/Consent.cruds", client_id="privacy-office")
    reply = office.post(
        "/Consent",
        json=_consent(mrn, {"type": "deny", "class": [{"code": "Observation"}]}, actor="spy-app"),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert reply.status_code == 201, reply.text
    consents.append(reply.json()["id"])
    spy = _client(gateway, "user/Observation.rs", client_id="spy-app")
    denied = spy.get(
        "/Observation",
        params={"patient": mrn, "category": "laboratory"},
        headers={"X-Request-ID": "consent-denial-1"},
    )
    assert denied.status_code == 200
    assert "entry" not in denied.json()
    assert "total" not in denied.json()
    auditor = _client(gateway, "user/AuditEvent.rs", client_id="auditor")
    events = auditor.get("/AuditEvent", params={"patient": mrn, "_count": 500}).json()
    (event,) = [
        e["resource"]
        for e in events.get("entry", [])
        if e["resource"].get("extension", [{}])[0].get("valueString") == "consent-denial-1"
    ]
    details = [d for e in event["entity"] for d in e.get("detail", [])]
    assert any(
        d["type"] == "consent-withheld" and reply.json()["id"] in d["valueString"] for d in details
    )
    assert "consent" in event["outcomeDesc"]


def test_a_consent_can_withhold_restricted_diagnoses(
    gateway: Gateway, consents: list[str], mock_hospital: MockHospital
) -> None:
    mrn = next(
        str(m)
        for m in range(100001, 100400)
        if {p["Sensitive"] for p in mock_hospital.get("/ehr/problems", mrn=str(m))} == {"Y", "N"}
    )
    office = _client(gateway, "user/Consent.cruds", client_id="privacy-office")
    deny_restricted = {
        "type": "deny",
        "securityLabel": [{"system": CONFIDENTIALITY, "code": "R"}],
    }
    reply = office.post(
        "/Consent",
        json=_consent(mrn, deny_restricted, actor="billing-app"),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert reply.status_code == 201, reply.text
    consents.append(reply.json()["id"])
    billing = _client(gateway, "user/Condition.rs", client_id="billing-app")
    clinic = _client(gateway, "user/Condition.rs", client_id="clinic")

    def labels(client: httpx.Client) -> list[bool]:
        reply = client.get("/Condition", params={"patient": mrn})
        assert reply.status_code == 200
        return [
            any(s["code"] == "R" for s in e["resource"].get("meta", {}).get("security", []))
            for e in reply.json().get("entry", [])
        ]

    assert True in labels(clinic)
    seen = labels(billing)
    assert seen and True not in seen  # the other problems still come through


def test_a_denied_read_is_403(gateway: Gateway, consents: list[str]) -> None:
    office = _client(gateway, "user/Consent.cruds", client_id="privacy-office")
    reply = office.post(
        "/Consent",
        json=_consent("100007", {"type": "deny", "class": [{"code": "Patient"}]}, actor="nosy"),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert reply.status_code == 201, reply.text
    consents.append(reply.json()["id"])
    nosy = _client(gateway, "user/Patient.rs", client_id="nosy")
    assert nosy.get("/Patient/100007").status_code == 403
    assert nosy.get("/Patient/100008").status_code == 200
    # Nor through a batch, nor a search.
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient/100007"}},
            {"request": {"method": "GET", "url": "Patient/100008"}},
            {"request": {"method": "GET", "url": "Patient?_id=100007"}},
        ],
    }
    reply = nosy.post("/", json=batch, headers={"Content-Type": "application/fhir+json"})
    assert reply.status_code == 200, reply.text
    denied, allowed, searched = reply.json()["entry"]
    assert denied["response"]["status"].startswith("403")
    assert "resource" not in denied
    assert allowed["resource"]["id"] == "100008"
    assert "entry" not in searched.get("resource", {})
    assert "100007" not in denied.get("response", {}).get("outcome", {}).get("text", "")
    assert _client(gateway, "user/Patient.rs", client_id="kind").get("/Patient/100007").is_success


@pytest.mark.parametrize(
    ("change", "status", "element"),
    [
        (lambda c: c.pop("patient"), 422, "Consent.patient"),
        (lambda c: c.update(patient={"reference": "Group/1"}), 422, "Consent.patient"),
        (lambda c: c["provision"].update(dataPeriod={"start": "2020"}), 422, "dataPeriod"),
        (lambda c: c["provision"]["provision"][0].update(type="permit"), 422, "type"),
        (
            lambda c: c["provision"].update(actor=[{"reference": {"reference": "Device/1"}}]),
            422,
            "actor",
        ),
        (lambda c: c.update(status="bogus"), 422, "status"),
        (lambda c: c.update(resourceType="Patient"), 400, None),
    ],
)
def test_a_consent_the_gateway_cannot_enforce_is_refused(
    gateway: Gateway, change: Any, status: int, element: str | None, fhir: Any
) -> None:
    office = _client(gateway, "user/Consent.cruds", client_id="privacy-office")
    consent = _consent("100001", {"type": "deny", "class": [{"code": "Observation"}]})
    change(consent)
    reply = office.post("/Consent", json=consent, headers={"Content-Type": "application/fhir+json"})
    assert reply.status_code == status, reply.text
    outcome = fhir(reply.json())
    if element is not None:
        assert element in outcome["issue"][0]["diagnostics"]


def test_a_patient_manages_only_their_own_consents(gateway: Gateway) -> None:
    portal = _client(gateway, "patient/Consent.cruds", client_id="portal", patient="100001")
    reply = portal.post(
        "/Consent",
        json=_consent("100002", {"type": "deny", "class": [{"code": "Observation"}]}),
        headers={"Content-Type": "application/fhir+json"},
    )
    assert reply.status_code == 403
    assert portal.get("/Consent", params={"patient": "100002"}).status_code == 403
    no_scope = _client(gateway, "patient/Observation.rs", client_id="portal", patient="100001")
    assert no_scope.get("/Consent", params={"patient": "100001"}).status_code == 403


# -- revocation ---------------------------------------------------------------------------


def _admin(gateway: Gateway, credential: str = ADMIN_TOKEN) -> httpx.Client:
    client = httpx.Client(
        base_url=gateway.base.removesuffix("/fhir"),
        headers={"Authorization": f"Bearer {credential}"},
        timeout=30,
    )
    gateway.clients.append(client)
    return client


def test_the_admin_endpoint_needs_its_own_credential(gateway: Gateway, fhir: Any) -> None:
    body = {"client_id": "whatever"}
    assert _admin(gateway, "wrong").post("/admin/revocations", json=body).status_code == 401
    # An access token, even a powerful one, is not the admin credential.
    token = gateway.token("system/*.cruds")
    reply = _admin(gateway, token).post("/admin/revocations", json=body)
    assert reply.status_code == 401
    fhir(reply.json())
    assert _admin(gateway).post("/admin/revocations", json={"jti": 3}).status_code == 400
    assert _admin(gateway).post("/admin/revocations", json={}).status_code == 400


def test_a_revoked_token_is_refused_at_once(gateway: Gateway) -> None:
    token = gateway.issuer.mint(scope="user/Patient.rs", client_id="revoke-jti")
    other = gateway.issuer.mint(scope="user/Patient.rs", client_id="revoke-jti")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{gateway.base}/Patient/100001", headers=headers).status_code == 200
    from joserfc import jwt

    jti = jwt.decode(token, gateway.issuer._key).claims["jti"]
    reply = _admin(gateway).post("/admin/revocations", json={"jti": jti, "reason": "lost phone"})
    assert reply.status_code == 201, reply.text
    refused = httpx.get(f"{gateway.base}/Patient/100001", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json()["resourceType"] == "OperationOutcome"
    ok = httpx.get(f"{gateway.base}/Patient/100001", headers={"Authorization": f"Bearer {other}"})
    assert ok.status_code == 200


def test_a_patient_revoking_an_app_cuts_it_off_for_that_patient_only(gateway: Gateway) -> None:
    app = "revoke-pair-app"
    mine = _client(gateway, "patient/Patient.rs", client_id=app, patient="100011")
    theirs = _client(gateway, "patient/Patient.rs", client_id=app, patient="100012")
    assert mine.get("/Patient/100011").status_code == 200
    reply = _admin(gateway).post("/admin/revocations", json={"client_id": app, "patient": "100011"})
    assert reply.status_code == 201
    assert mine.get("/Patient/100011").status_code == 401
    assert theirs.get("/Patient/100012").status_code == 200
    # Authorised again later, the app gets a new token, which works.
    time.sleep(1.1)  # `iat` has whole seconds: a later token must be a later second
    again = _client(gateway, "patient/Patient.rs", client_id=app, patient="100011")
    assert again.get("/Patient/100011").status_code == 200


def test_revoking_an_app_and_lifting_it(gateway: Gateway) -> None:
    app = "revoke-app-wide"
    client = _client(gateway, "user/Patient.rs", client_id=app)
    reply = _admin(gateway).post("/admin/revocations", json={"client_id": app})
    assert reply.status_code == 201
    assert client.get("/Patient/100001").status_code == 401
    listed = _admin(gateway).get("/admin/revocations").json()["revocations"]
    assert any(r["id"] == reply.json()["id"] for r in listed)
    assert _admin(gateway).delete(f"/admin/revocations/{reply.json()['id']}").status_code == 204
    assert client.get("/Patient/100001").status_code == 200
    assert _admin(gateway).delete(f"/admin/revocations/{reply.json()['id']}").status_code == 404


def _shared_store_revocation(tmp_path: Path, mock: MockHospital, store_url: str) -> None:
    extra = {"store": {"url": store_url, "poll_interval": 0.2}}
    with (
        start_gateway(tmp_path / "a", mock.ehr_url, extra=extra) as first,
        start_gateway(tmp_path / "b", mock.ehr_url, extra=extra, issuer=first.issuer) as second,
    ):
        app = f"replicated-app-{time.time_ns()}"
        on_second = _client(second, "user/Patient.rs", client_id=app)
        assert on_second.get("/Patient/100001").status_code == 200
        assert _admin(first).post("/admin/revocations", json={"client_id": app}).status_code == 201
        deadline = time.monotonic() + 10
        while on_second.get("/Patient/100001").status_code != 401:
            assert time.monotonic() < deadline, "the second replica never saw the revocation"
            time.sleep(0.1)


def test_a_revocation_reaches_every_gateway_sharing_the_store(
    tmp_path: Path, mock_hospital: MockHospital
) -> None:
    _shared_store_revocation(tmp_path, mock_hospital, f"sqlite:///{tmp_path / 'shared.db'}")


def test_a_revocation_reaches_every_replica_on_postgresql(
    tmp_path: Path, mock_hospital: MockHospital, postgres_url: str
) -> None:
    _shared_store_revocation(tmp_path, mock_hospital, postgres_url)
