"""The request bodies the README's workflows send (docs/examples/), through the real gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import Gateway

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
JSON = {"Content-Type": "application/fhir+json"}


def _body(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def test_the_readme_claim_is_submitted_and_followed(gateway: Gateway, fhir: Any) -> None:
    client = gateway.client("user/*.*")
    submitted = client.post("/Claim", json=_body("claim.json"), headers=JSON)
    assert submitted.status_code == 201, submitted.text
    location = submitted.headers["location"]
    followed = client.get(location.removeprefix(gateway.base))
    assert followed.status_code == 200, followed.text
    assert fhir(followed.json())["id"] == location.rsplit("/", 1)[1]


def test_the_readme_readings_bundle_is_one_transaction(gateway: Gateway, fhir: Any) -> None:
    answer = gateway.client("user/*.*").post("/", json=_body("readings-bundle.json"), headers=JSON)
    assert answer.status_code == 200, answer.text
    bundle = fhir(answer.json())
    assert bundle["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in bundle["entry"]] == ["201", "201"]
    # Both readings in one legacy call, all or nothing: no entry says it went alone.
    assert all("outcome" not in e["response"] for e in bundle["entry"])
