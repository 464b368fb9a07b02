"""Searches under a patient scope tell nothing of other patients, links and totals included.

A search naming another patient is 403 before any legacy call; one naming no
patient is narrowed to the token's own; what the token's rules leave out is left
out before paging, so `next` links and totals count only what it may see.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import Gateway

pytestmark = pytest.mark.e2e

OWN, OTHER = "100001", "100002"
PATIENT_APP = "patient/*.read"
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.7777.1"
VITALS = (
    "user/Observation.rs?category="
    "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
)


def _legacy_calls(hospital: MockHospital) -> int:
    stats = hospital.stats()
    return sum(sum(s["calls"].values()) for s in stats.values() if isinstance(s, dict))


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    for link in bundle.get("link", []):
        if link["relation"] == relation:
            return str(link["url"])
    return None


def _pages(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    reply = client.get(path, params=params)
    pages = []
    while True:
        assert reply.status_code == 200, reply.text
        pages.append(reply.json())
        url = _link(pages[-1], "next")
        if url is None:
            return pages
        assert len(pages) < 50
        reply = client.get(url)


def _ids(pages: list[dict[str, Any]]) -> list[str]:
    return [e["resource"]["id"] for p in pages for e in p.get("entry", [])]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/Observation", {"patient": OTHER, "_count": "1"}),
        ("/Observation", {"patient": OTHER, "code": "http://loinc.org|2345-7", "_count": "1"}),
        ("/Condition", {"patient": f"Patient/{OTHER}"}),
        ("/DiagnosticReport", {"patient": f"http://elsewhere.test/fhir/Patient/{OTHER}"}),
        ("/Patient", {"_id": OTHER}),
        ("/Patient", {"identifier": f"{MRN_SYSTEM}|{OTHER}", "family": "a"}),
    ],
)
def test_search_naming_another_patient_is_403_before_any_legacy_call(
    gateway: Gateway, mock_hospital: MockHospital, fhir: Any, path: str, params: dict[str, str]
) -> None:
    client = gateway.client(PATIENT_APP, patient=OWN)
    calls = _legacy_calls(mock_hospital)

    reply = client.get(path, params=params)

    assert reply.status_code == 403, reply.text
    assert fhir(reply.json())["issue"][0]["code"] == "forbidden"
    assert _legacy_calls(mock_hospital) == calls


def test_codes_of_another_patient_cannot_be_probed(gateway: Gateway) -> None:
    everything = _pages(gateway.client("user/*.read"), "/Observation", patient=OTHER)
    had = {o["resource"]["code"]["coding"][0]["code"] for o in everything[0]["entry"]}
    client = gateway.client(PATIENT_APP, patient=OWN)

    answers = {
        code: client.get(
            "/Observation", params={"patient": OTHER, "code": f"http://loinc.org|{code}"}
        )
        for code in [*sorted(had)[:2], "0000-0"]
    }

    assert {r.status_code for r in answers.values()} == {403}
    assert len({r.json()["issue"][0]["diagnostics"] for r in answers.values()}) == 1


def test_own_patient_search_pages_as_before(gateway: Gateway, fhir: Any) -> None:
    clinician = _pages(gateway.client("user/*.read"), "/Observation", patient=OWN, _count=2)
    client = gateway.client(PATIENT_APP, patient=OWN)

    pages = _pages(client, "/Observation", patient=OWN, _count=2)

    assert len(_ids(clinician)) > 2
    assert _ids(pages) == _ids(clinician)
    assert all(fhir(p)["type"] == "searchset" and "total" not in p for p in pages)


def test_patient_search_without_a_patient_is_narrowed_to_its_own(
    gateway: Gateway, fhir: Any
) -> None:
    other = gateway.client("user/*.read").get(f"/Patient/{OTHER}").json()
    family = other["name"][0]["family"][:1]
    everyone = gateway.client("user/*.read").get(
        "/Patient", params={"family": family, "_count": "1"}
    )
    client = gateway.client(PATIENT_APP, patient=OWN)

    pages = _pages(client, "/Patient", family=family, _count=1)

    assert _link(everyone.json(), "next") is not None  # the legacy search alone would page
    assert set(_ids(pages)) <= {OWN}
    assert len(pages) == 1 and "total" not in pages[0]
    assert ("_id", OWN) in httpx.URL(_link(pages[0], "self") or "").params.multi_items()


def test_paging_link_of_another_patients_search_is_403(gateway: Gateway) -> None:
    clinician = gateway.client("user/*.read").get(
        "/Observation", params={"patient": OTHER, "_count": "1"}
    )
    link = _link(clinician.json(), "next")
    assert link is not None

    reply = gateway.client(PATIENT_APP, patient=OWN).get(link)

    assert reply.status_code == 403, reply.text
    assert reply.json()["issue"][0]["code"] == "forbidden"


def test_what_a_restriction_leaves_out_makes_no_links_or_total(gateway: Gateway) -> None:
    lab = _pages(gateway.client("user/*.read"), "/Observation", patient=OTHER, _count=1)
    assert len(lab) > 1  # lab results only: a vital-signs scope sees none of them

    pages = _pages(gateway.client(VITALS), "/Observation", patient=OTHER, _count=1)

    assert pages == [
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": [{"relation": "self", "url": _link(pages[0], "self")}],
        }
    ]
