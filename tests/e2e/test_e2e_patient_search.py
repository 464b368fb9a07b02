"""Patient search and stateless paging through the real gateway and mock EHR."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from bridge.mock import MockHospital
from tests.support import Gateway, copy_mappings, start_gateway

pytestmark = pytest.mark.e2e


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    for link in bundle.get("link", []):
        if link["relation"] == relation:
            return str(link["url"])
    return None


def _walk(client: Any, first: dict[str, Any], fhir: Any) -> list[str]:
    ids = [e["resource"]["id"] for e in first.get("entry", [])]
    url = _link(first, "next")
    pages = 1
    while url is not None:
        reply = client.get(url)
        assert reply.status_code == 200, reply.text
        bundle = fhir(reply.json())
        ids += [e["resource"]["id"] for e in bundle.get("entry", [])]
        url = _link(bundle, "next")
        pages += 1
        assert pages < 200
    return ids


@pytest.mark.parametrize("count", [7, 25, 40])
def test_search_walks_every_match_exactly_once(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, count: int
) -> None:
    client = gateway.client()
    first = fhir(client.get("/Patient", params={"family": "Smith", "_count": count}).json())
    assert first["type"] == "searchset"
    total = first["total"]
    assert total > 75  # common surnames span several legacy pages
    ids = _walk(client, first, fhir)
    assert len(ids) == total
    assert len(set(ids)) == total
    for entry in first["entry"]:
        assert entry["fullUrl"] == f"{gateway.base}/Patient/{entry['resource']['id']}"
        assert entry["search"] == {"mode": "match"}
        assert entry["resource"]["name"][0]["family"].lower().startswith("smith")


def test_search_pages_reuse_the_legacy_cursor(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    client = gateway.client()
    assert client.get("/Patient/100001").status_code == 200  # a warm, logged-in session
    before = mock_hospital.stats()["ehr"]["calls"]
    first = fhir(client.get("/Patient", params={"family": "Smith", "_count": 25}).json())
    ids = _walk(client, first, fhir)
    after = mock_hospital.stats()["ehr"]["calls"]
    # One FindPatients, then one FetchNext per further page: no replays.
    assert after["FindPatients"] - before.get("FindPatients", 0) == 1
    assert after["FetchNext"] - before.get("FetchNext", 0) == -(-len(ids) // 25) - 1


def test_search_self_link_keeps_only_understood_parameters(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client().get(
        "/Patient", params={"family": "Smith", "nickname": "Bob", "_count": 5}
    )
    assert reply.status_code == 200
    self_url = _link(fhir(reply.json()), "self")
    assert self_url is not None
    assert dict(parse_qsl(urlsplit(self_url).query)) == {"family": "Smith", "_count": "5"}


def test_search_unknown_parameter_under_strict_handling_is_400(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client().get(
        "/Patient", params={"nickname": "Bob"}, headers={"Prefer": "handling=strict"}
    )
    assert reply.status_code == 400
    assert "nickname" in fhir(reply.json())["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "params",
    [
        {"birthdate": "1980-13-45x"},
        {"birthdate": "ge1980-01-01"},
        {"birthdate": "1980"},
        {"family:exact": "Smith"},
        {"family": "Smith,Jones"},
        {"_count": "many"},
        {"gender": "martian"},
    ],
)
def test_search_malformed_values_are_400(
    gateway: Gateway, fhir: Any, params: dict[str, str]
) -> None:
    reply = gateway.client().get("/Patient", params=params)
    assert reply.status_code == 400, reply.text
    assert fhir(reply.json())["issue"][0]["code"] == "invalid"


def test_search_by_birthdate_and_gender_converts_to_legacy_forms(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any
) -> None:
    raw = mock_hospital.sample_patients(1, offset=10)[0]
    month, day, year = raw["DOB"].split("/")
    gender = {"M": "male", "F": "female", "U": "unknown"}[raw["Sex"]]
    bundle = fhir(
        gateway.client()
        .get("/Patient", params={"birthdate": f"{year}-{month}-{day}", "gender": gender})
        .json()
    )
    ids = {e["resource"]["id"] for e in bundle["entry"]}
    assert raw["MRN"] in ids
    for entry in bundle["entry"]:
        assert entry["resource"]["birthDate"] == f"{year}-{month}-{day}"
        assert entry["resource"]["gender"] == gender


def test_search_by_identifier_honours_the_system(gateway: Gateway, fhir: Any) -> None:
    client = gateway.client()
    system = "urn:oid:2.16.840.1.113883.3.7777.1"
    found = fhir(client.get("/Patient", params={"identifier": f"{system}|100042"}).json())
    assert [e["resource"]["id"] for e in found["entry"]] == ["100042"]
    other = fhir(client.get("/Patient", params={"identifier": "urn:other|100042"}).json())
    assert other["total"] == 0
    assert "entry" not in other


def test_search_by_post_form_equals_get(gateway: Gateway, fhir: Any) -> None:
    client = gateway.client()
    by_get = fhir(client.get("/Patient", params={"family": "Garcia", "_count": 5}).json())
    reply = client.post("/Patient/_search", data={"family": "Garcia", "_count": "5"})
    assert reply.status_code == 200
    by_post = fhir(reply.json())
    assert [e["resource"]["id"] for e in by_post["entry"]] == [
        e["resource"]["id"] for e in by_get["entry"]
    ]
    assert by_post["total"] == by_get["total"]


def test_search_post_with_json_body_is_415(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client().post("/Patient/_search", json={"family": "Smith"})
    assert reply.status_code == 415
    fhir(reply.json())


def test_search_count_zero_gives_the_total_only(gateway: Gateway, fhir: Any) -> None:
    bundle = fhir(gateway.client().get("/Patient", params={"family": "Smith", "_count": 0}).json())
    assert bundle["total"] > 0
    assert "entry" not in bundle
    assert _link(bundle, "next") is None


def test_search_with_patient_scope_returns_only_that_patient(gateway: Gateway, fhir: Any) -> None:
    reply = gateway.client("patient/Patient.rs", patient="100042").get(
        "/Patient", params={"_count": 50}
    )
    bundle = fhir(reply.json())
    assert [e["resource"]["id"] for e in bundle.get("entry", [])] in ([], ["100042"])
    assert "total" not in bundle


def test_tampered_paging_link_is_400(gateway: Gateway, fhir: Any) -> None:
    client = gateway.client()
    first = fhir(client.get("/Patient", params={"family": "Smith", "_count": 5}).json())
    url = _link(first, "next")
    assert url is not None
    token = url.split("_page=")[1]
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    reply = client.get("/Patient", params={"_page": flipped})
    assert reply.status_code == 400
    assert fhir(reply.json())["issue"][0]["code"] == "invalid"
    assert client.get("/Patient", params={"_page": "garbage"}).status_code == 400


def test_paging_link_works_on_a_second_gateway_with_the_same_key(
    mock_hospital: MockHospital, tmp_path: Path, fhir: Any
) -> None:
    key = "shared-paging-key-for-two-replicas"
    with start_gateway(tmp_path / "a", mock_hospital.ehr_url, paging_key=key) as first_gw:
        first = fhir(
            first_gw.client().get("/Patient", params={"family": "Smith", "_count": 10}).json()
        )
        with (
            start_gateway(tmp_path / "b", mock_hospital.ehr_url, paging_key=key) as same,
            start_gateway(tmp_path / "c", mock_hospital.ehr_url, paging_key="other") as other,
        ):
            url = _link(first, "next")
            assert url is not None
            query = urlsplit(url).query
            page2 = fhir(same.client().get(f"/Patient?{query}").json())
            first_ids = {e["resource"]["id"] for e in first["entry"]}
            second_ids = {e["resource"]["id"] for e in page2["entry"]}
            assert len(second_ids) == 10
            assert not first_ids & second_ids
            assert other.client().get(f"/Patient?{query}").status_code == 400


def test_a_changed_mapping_is_served_without_code_changes(
    mock_hospital: MockHospital, tmp_path: Path, fhir: Any
) -> None:
    folder = copy_mappings(tmp_path)
    mapping = folder / "Patient.yaml"
    mapping.write_text(
        mapping.read_text()
        + """  - fhir: identifier[1]
    fields:
      - {fhir: system, value: "urn:example:zip-of-record"}
      - {fhir: value, from: Zip}
"""
    )
    raw = mock_hospital.sample_patients(1)[0]
    with start_gateway(tmp_path, mock_hospital.ehr_url, mappings=folder) as gw:
        patient = fhir(gw.client().get(f"/Patient/{raw['MRN']}").json())
    assert patient["identifier"][1] == {"system": "urn:example:zip-of-record", "value": raw["Zip"]}


def test_two_workers_serve_every_page_whichever_answers(
    mock_hospital: MockHospital, tmp_path: Path, fhir: Any
) -> None:
    with start_gateway(tmp_path, mock_hospital.ehr_url, extra={"workers": 2}) as gw:
        client = gw.client()
        first = fhir(client.get("/Patient", params={"family": "Garcia", "_count": 10}).json())
        ids = _walk(client, first, fhir)
    assert len(ids) == first["total"] == len(set(ids))
