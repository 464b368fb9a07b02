"""`Idempotency-Key`: a repeated write is answered from the store, never done twice.

Readings go to the EHR's vitals (`RecordVitals`); the mock's side door shows
how many the EHR really stored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson
import pytest

from bridge.mock import MockHospital
from tests.support import Gateway

pytestmark = pytest.mark.e2e

FHIR_JSON = "application/fhir+json"
MRN = "100011"


def _reading(value: int, mrn: str = MRN) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "55423-8"}]},
        "subject": {"reference": f"Patient/{mrn}"},
        "effectiveDateTime": "2026-11-24T14:30:00Z",
        "valueQuantity": {
            "value": value,
            "unit": "{steps}",
            "system": "http://unitsofmeasure.org",
            "code": "{steps}",
        },
    }


def _post(client: httpx.Client, body: Any, key: str, **headers: str) -> httpx.Response:
    return client.post(
        "/Observation",
        json=body,
        headers={"Content-Type": FHIR_JSON, "Idempotency-Key": key, **headers},
    )


def _stored_steps(hospital: MockHospital, value: int) -> list[dict[str, Any]]:
    return [
        r for r in hospital.get("/ehr/vitals", mrn=MRN, type="STEPS") if r["Value"] == str(value)
    ]


def test_a_repeated_create_is_replayed_and_stored_once(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    app = gateway.client("user/Observation.crs")
    key = str(uuid.uuid4())
    first = _post(app, _reading(7311), key)
    assert first.status_code == 201, first.text
    created = fhir(first.json())
    calls = mock_hospital.stats()["ehr"]["calls"]
    again = _post(app, _reading(7311), key)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["content-type"].startswith(FHIR_JSON)
    assert again.json() == created
    # One reading in the EHR; the replay called nothing.
    assert [r["ReadingId"] for r in _stored_steps(mock_hospital, 7311)] == [created["id"]]
    assert mock_hospital.stats()["ehr"]["calls"] == calls
    # The key as a quoted string (draft-ietf-httpapi-idempotency-key-header) is the same key.
    quoted = _post(app, _reading(7311), f'"{key}"')
    assert quoted.status_code == 201 and quoted.headers["idempotent-replayed"] == "true"


def test_the_same_key_with_another_body_is_422(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    app = gateway.client("user/Observation.crs")
    key = str(uuid.uuid4())
    assert _post(app, _reading(7312), key).status_code == 201
    other = _post(app, _reading(7313), key)
    assert other.status_code == 422, other.text
    assert fhir(other.json())["resourceType"] == "OperationOutcome"
    assert "different request" in other.json()["issue"][0]["diagnostics"]
    assert _stored_steps(mock_hospital, 7313) == []


def test_keys_belong_to_one_client(gateway: Gateway, mock_hospital: MockHospital) -> None:
    key = str(uuid.uuid4())
    one = gateway.client("user/Observation.crs")
    token = gateway.issuer.mint(scope="user/Observation.crs", client_id="another-app")
    other = httpx.Client(
        base_url=gateway.base, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    gateway.clients.append(other)
    assert _post(one, _reading(7314), key).status_code == 201
    second = _post(other, _reading(7314), key)
    assert second.status_code == 201, second.text
    assert "idempotent-replayed" not in second.headers
    assert len(_stored_steps(mock_hospital, 7314)) == 2


def test_a_refused_write_is_replayed_too(gateway: Gateway, mock_hospital: MockHospital) -> None:
    app = gateway.client("user/Observation.crs")
    key = str(uuid.uuid4())
    bad = _reading(7315)
    bad["valueQuantity"]["unit"] = bad["valueQuantity"]["code"] = "kg"  # steps in kg
    first = _post(app, bad, key)
    assert first.status_code == 422, first.text
    again = _post(app, bad, key)
    assert again.status_code == 422
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


def test_a_key_that_cannot_be_one_is_400(gateway: Gateway, fhir: Any) -> None:
    app = gateway.client("user/Observation.crs")
    for key in ("k" * 257, "", "with space"):
        reply = _post(app, _reading(7316), key)
        assert reply.status_code == 400, (key, reply.text)
        assert fhir(reply.json())["resourceType"] == "OperationOutcome"
    assert _post(app, _reading(7316), "k" * 256).status_code == 201


def test_an_async_write_with_a_key_is_queued_once(
    gateway: Gateway, mock_hospital: MockHospital
) -> None:
    app = gateway.client("user/Observation.crs")
    key = str(uuid.uuid4())
    first = _post(app, _reading(7317), key, Prefer="respond-async")
    assert first.status_code == 202, first.text
    again = _post(app, _reading(7317), key, Prefer="respond-async")
    assert again.status_code == 202
    assert again.headers["content-location"] == first.headers["content-location"]
    # A synchronous request is a different request, even with the same body.
    assert _post(app, _reading(7317), key).status_code == 422
    deadline = time.monotonic() + 60
    while (status := app.get(first.headers["content-location"])).status_code == 202:
        assert time.monotonic() < deadline, "the write was not delivered"
        time.sleep(0.1)
    assert status.status_code == 200, status.text
    assert len(_stored_steps(mock_hospital, 7317)) == 1


def _client(gateway: Gateway, scope: str, **claims: Any) -> httpx.Client:
    """A client of the app `test-app` whose token carries these claims (subject, patient)."""
    token = gateway.issuer.mint(scope=scope, client_id="test-app", **claims)
    client = httpx.Client(
        base_url=gateway.base, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    gateway.clients.append(client)
    return client


def _read_batch(gateway: Gateway, client: httpx.Client, key: str | None) -> httpx.Response:
    body = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Patient/100002"}}],
    }
    headers = {"Content-Type": FHIR_JSON, **({"Idempotency-Key": key} if key else {})}
    # The same bytes every time: a replay needs the very same request.
    return client.post(gateway.base, content=orjson.dumps(body), headers=headers)


def test_a_stored_reply_is_never_replayed_to_another_patient_context(
    gateway: Gateway,
) -> None:
    key = str(uuid.uuid4())
    clinician = _client(gateway, "user/*.* system/*.*")
    first = _read_batch(gateway, clinician, key)
    assert first.status_code == 200, first.text
    assert first.json()["entry"][0]["resource"]["id"] == "100002"
    # The same app, launched for patient 100001: the key is not its key.
    launched = _client(gateway, "patient/*.read", patient="100001")
    unkeyed = _read_batch(gateway, launched, None)
    reply = _read_batch(gateway, launched, key)
    assert "idempotent-replayed" not in reply.headers
    assert reply.status_code == 200, reply.text
    assert reply.json() == unkeyed.json()
    (entry,) = reply.json()["entry"]
    assert entry["response"]["status"] == "403" and "resource" not in entry
    # Nor to another user of the app with the same scopes: it runs anew.
    colleague = _client(gateway, "user/*.* system/*.*", subject="another-user")
    again = _read_batch(gateway, colleague, key)
    assert again.status_code == 200, again.text
    assert "idempotent-replayed" not in again.headers
    # The user who made it, with a new token, gets the stored reply.
    same = _read_batch(gateway, _client(gateway, "user/*.* system/*.*"), key)
    assert same.headers["idempotent-replayed"] == "true"
    assert same.json() == first.json()


def test_keys_belong_to_one_user_and_patient_context_of_a_client(
    gateway: Gateway, mock_hospital: MockHospital
) -> None:
    key = str(uuid.uuid4())
    assert _post(_client(gateway, "user/Observation.crs"), _reading(7318), key).status_code == 201
    # A new token of the same user and context: the repeat is replayed, not written twice.
    repeat = _post(_client(gateway, "user/Observation.crs"), _reading(7318), key)
    assert repeat.status_code == 201 and repeat.headers["idempotent-replayed"] == "true"
    assert len(_stored_steps(mock_hospital, 7318)) == 1
    # Another user, and the same app launched for the patient, each have keys of their own.
    others = [
        _client(gateway, "user/Observation.crs", subject="another-user"),
        _client(gateway, "patient/Observation.crs", patient=MRN),
    ]
    for n, other in enumerate(others, 2):
        reply = _post(other, _reading(7318), key)
        assert reply.status_code == 201, reply.text
        assert "idempotent-replayed" not in reply.headers
        assert len(_stored_steps(mock_hospital, 7318)) == n
