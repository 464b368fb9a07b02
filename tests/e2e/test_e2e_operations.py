"""FHIR operations ($name) mapped to SOAP operations."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import Gateway

pytestmark = pytest.mark.e2e

CLAIM = {
    "resourceType": "Claim",
    "status": "active",
    "type": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}
        ]
    },
    "use": "claim",
    "patient": {"reference": "Patient/100002"},
    "created": "2026-11-24",
    "billablePeriod": {"start": "2026-11-20"},
    "provider": {"display": "General Hospital"},
    "priority": {"coding": [{"code": "normal"}]},
    "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "self"}}],
    "diagnosis": [
        {
            "sequence": 1,
            "diagnosisCodeableConcept": {
                "coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}]
            },
        }
    ],
    "item": [
        {
            "sequence": 1,
            "productOrService": {
                "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]
            },
        }
    ],
    "total": {"value": 95.0, "currency": "USD"},
}


def _claim(gateway: Gateway) -> str:
    reply = gateway.client("user/*.*").post(
        "/Claim", json=CLAIM, headers={"Content-Type": "application/fhir+json"}
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def test_instance_operation_answers_parameters(gateway: Gateway, fhir: Any) -> None:
    number = _claim(gateway)
    reply = gateway.client().get(f"/Claim/{number}/$status")
    assert reply.status_code == 200, reply.text
    params = fhir(reply.json())
    values = {
        p["name"]: next(v for k, v in p.items() if k.startswith("value"))
        for p in params["parameter"]
    }
    assert values["status"] in ("received", "in-review", "paid", "denied")
    assert values["amount"] == 95.0


def test_operation_by_post_with_parameters_body(gateway: Gateway, fhir: Any) -> None:
    number = _claim(gateway)
    reply = gateway.client().post(
        f"/Claim/{number}/$status",
        json={"resourceType": "Parameters", "parameter": []},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert reply.status_code == 200, reply.text
    fhir(reply.json())


def test_operation_errors(gateway: Gateway, fhir: Any) -> None:
    client = gateway.client()
    wrong_level = client.get("/Claim/$status")
    assert wrong_level.status_code == 405
    unknown_param = client.get("/Claim/CLM-2026-000001/$status", params={"colour": "red"})
    assert unknown_param.status_code == 400
    assert "colour" in fhir(unknown_param.json())["issue"][0]["diagnostics"]
    unknown_op = client.get("/Claim/CLM-2026-000001/$teleport")
    assert unknown_op.status_code == 405
    missing = client.get("/Claim/CLM-2099-999999/$status")
    assert missing.status_code == 404
    fhir(missing.json())


def test_capability_statement_lists_operations(gateway: Gateway, fhir: Any) -> None:
    cap = fhir(gateway.anonymous().get("/metadata").json())
    claim = next(r for r in cap["rest"][0]["resource"] if r["type"] == "Claim")
    assert [o["name"] for o in claim["operation"]] == ["status"]
