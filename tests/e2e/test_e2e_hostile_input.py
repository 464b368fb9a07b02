"""Hostile and unusual input: escaped on the way out, correct on the way back, never a 500."""

from __future__ import annotations

import random
import string
from typing import Any

import pytest

from bridge.mock import MockHospital
from tests.support import Gateway

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("family", ["O'Brien", "o'brien", "Müller", "MÜLLER", "Núñez", "Łukas"])
def test_search_finds_names_with_quotes_and_non_ascii(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, family: str
) -> None:
    bundle = fhir(gateway.client().get("/Patient", params={"family": family}).json())
    assert bundle["total"] > 0
    for entry in bundle["entry"]:
        assert entry["resource"]["name"][0]["family"].casefold().startswith(family.casefold())


@pytest.mark.parametrize(
    "value", ["'", '"', "<", ">", "&", "<x>&amp;</x>", "]]>", "' OR '1'='1", "\\", "%", "😀"]
)
def test_search_values_with_markup_reach_the_legacy_system_escaped(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, value: str
) -> None:
    reply = gateway.client().get("/Patient", params={"family": value, "given": value})
    assert reply.status_code == 200, reply.text
    bundle = fhir(reply.json())
    assert bundle["total"] == 0
    # The legacy system parsed every envelope: no fault, no bad request.
    assert mock_hospital.stats()["ehr"]["faults"].get("EHR-BAD-REQUEST", 0) == 0


def test_read_of_a_name_with_an_apostrophe_round_trips(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    records = mock_hospital.sample_patients(5000)
    raw = next(r for r in records if "'" in r["Name"] or "ü" in r["Name"])
    patient = fhir(gateway.client().get(f"/Patient/{raw['MRN']}").json())
    assert patient["name"][0]["family"] == raw["Name"].split("^")[0]


@pytest.mark.parametrize("value", ["a\x00b", "a\x1bb", "\x7f\x01"])
def test_control_characters_are_400(gateway: Gateway, fhir: Any, value: str) -> None:
    reply = gateway.client().get("/Patient", params={"family": value})
    assert reply.status_code == 400
    fhir(reply.json())


def test_huge_url_is_414(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client().get("/Patient", params={"family": "x" * 20_000})
    assert reply.status_code == 414
    fhir(reply.json())


def test_huge_search_body_is_413(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client().post("/Patient/_search", data={"family": "x" * 2_000_000})
    assert reply.status_code == 413
    fhir(reply.json())


def test_random_requests_never_get_a_500(gateway: Gateway, fhir: Any) -> None:
    rng = random.Random(7)
    alphabet = string.printable + "äöü€😀'\"<>&%#?/\\"
    client = gateway.client()
    names = ["family", "given", "birthdate", "gender", "identifier", "_id", "_count", "x", "_page"]
    for _ in range(150):
        params = {
            rng.choice(names) + rng.choice(["", "", ":exact", ":missing"]): "".join(
                rng.choice(alphabet) for _ in range(rng.randint(0, 12))
            )
            for _ in range(rng.randint(0, 3))
        }
        path = rng.choice(["/Patient", "/Patient/_search", "/Patient/100001", "/metadata"])
        if path.endswith("_search"):
            reply = client.post(path, data=params)
        else:
            reply = client.get(path, params=params)
        assert reply.status_code < 500, (path, reply.status_code, reply.text)
        assert reply.headers["content-type"].startswith("application/fhir+json")
        fhir(reply.json())


@pytest.mark.parametrize("path", ["/fhir/Patient/1/_history/2", "/nowhere", "/fhir/patient/1"])
def test_unknown_addresses_are_404_outcomes(gateway: Gateway, fhir: Any, path: str) -> None:
    reply = gateway.client().get(gateway.base.removesuffix("/fhir") + path)
    assert reply.status_code == 404, reply.text
    fhir(reply.json())


def test_logs_hold_no_patient_data(gateway: Gateway, mock_hospital: MockHospital) -> None:
    raw = mock_hospital.sample_patients(1, offset=321)[0]
    client = gateway.client()
    client.get(f"/Patient/{raw['MRN']}")
    client.get("/Patient", params={"family": raw["Name"].split("^")[0]})
    client.get("/Patient/999999")
    logs = gateway.logs()
    assert raw["MRN"] not in logs
    assert raw["Name"].split("^")[0] not in logs
    assert "999999" not in logs
    assert mock_hospital.password not in logs


@pytest.mark.parametrize("path", ["/fhir", "/fhir/"])
def test_get_on_the_base_is_405(gateway: Gateway, fhir: Any, path: str) -> None:
    # The base takes POST (batch and transaction Bundles); system-wide search is not served.
    reply = gateway.client().get(gateway.base.removesuffix("/fhir") + path)
    assert reply.status_code == 405
    fhir(reply.json())
