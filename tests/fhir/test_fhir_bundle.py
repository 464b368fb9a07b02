"""searchset Bundles and their links."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bridge.fhir.bundle import search_url, searchset

BASE = "https://fhir.example.org/fhir"


def patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid}


def test_search_url_without_params() -> None:
    assert search_url(BASE, "Patient", []) == f"{BASE}/Patient"


def test_search_url_keeps_order_and_encodes_values() -> None:
    params = [("family", "Müller & Söhne"), ("identifier", "urn:x|1"), ("_count", "5")]

    url = search_url(BASE, "Patient", params)

    assert url == (
        f"{BASE}/Patient?family=M%C3%BCller+%26+S%C3%B6hne&identifier=urn%3Ax%7C1&_count=5"
    )
    assert parse_qsl(urlsplit(url).query) == params


def test_searchset_entries_and_links() -> None:
    bundle = searchset(
        BASE,
        [patient("1"), patient("2")],
        total=42,
        self_url=f"{BASE}/Patient?family=Smith",
        next_url=f"{BASE}/Patient?_page=abc",
    )

    assert bundle == {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 42,
        "link": [
            {"relation": "self", "url": f"{BASE}/Patient?family=Smith"},
            {"relation": "next", "url": f"{BASE}/Patient?_page=abc"},
        ],
        "entry": [
            {
                "fullUrl": f"{BASE}/Patient/1",
                "resource": patient("1"),
                "search": {"mode": "match"},
            },
            {
                "fullUrl": f"{BASE}/Patient/2",
                "resource": patient("2"),
                "search": {"mode": "match"},
            },
        ],
    }


def test_searchset_last_page_has_no_next_link() -> None:
    bundle = searchset(BASE, [patient("1")], total=1, self_url="s", next_url=None)

    assert bundle["link"] == [{"relation": "self", "url": "s"}]


def test_searchset_without_total_leaves_it_out() -> None:
    bundle = searchset(BASE, [patient("1")], total=None, self_url="s", next_url=None)

    assert "total" not in bundle


def test_searchset_total_zero_is_kept() -> None:
    bundle = searchset(BASE, [], total=0, self_url="s", next_url=None)

    assert bundle["total"] == 0


def test_searchset_empty_has_no_entry_element() -> None:
    bundle = searchset(BASE, [], total=0, self_url="s", next_url=None)

    assert "entry" not in bundle


def test_searchset_full_url_uses_each_resources_type() -> None:
    observation = {"resourceType": "Observation", "id": "o-1"}

    bundle = searchset(BASE, [patient("1"), observation], total=None, self_url="s", next_url=None)

    assert [e["fullUrl"] for e in bundle["entry"]] == [
        f"{BASE}/Patient/1",
        f"{BASE}/Observation/o-1",
    ]
    assert bundle["entry"][1]["resource"] is observation
