"""check_acceptable: this server answers in FHIR JSON only."""

from __future__ import annotations

import pytest

from bridge.errors import NotAcceptable
from bridge.fhir.negotiate import FHIR_JSON, check_acceptable


def test_fhir_json_media_type() -> None:
    assert FHIR_JSON == "application/fhir+json"


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "",
        "   ",
        "*/*",
        "application/*",
        "application/fhir+json",
        "application/json",
        "application/json+fhir",
        "Application/FHIR+JSON",
        "application/fhir+json; fhirVersion=4.0",
        "application/fhir+json;q=0.5",
        "application/json; q=0.1",
        "text/html, application/fhir+json;q=0.9",
        "application/fhir+xml;q=1.0, application/fhir+json;q=0.5",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ],
)
def test_check_acceptable_accepts_json(accept: str | None) -> None:
    check_acceptable(accept, None)


@pytest.mark.parametrize(
    "accept",
    [
        "application/fhir+xml",
        "application/xml",
        "text/xml",
        "text/html",
        "text/turtle",
        "application/fhir+xml, text/html;q=0.5",
        "application/fhir+json;q=0",
        "application/json;q=0.0, application/fhir+xml",
        "*/*;q=0",
        "application/json;q=abc",
    ],
)
def test_check_acceptable_refuses_anything_else(accept: str) -> None:
    with pytest.raises(NotAcceptable) as info:
        check_acceptable(accept, None)

    assert info.value.status == 406
    assert info.value.code == "not-supported"


@pytest.mark.parametrize(
    "fmt", ["json", "JSON", " json ", "application/fhir+json", "application/json"]
)
def test_check_acceptable_format_json(fmt: str) -> None:
    check_acceptable(None, fmt)


def test_check_acceptable_format_json_wins_over_accept() -> None:
    check_acceptable("text/html", "json")


@pytest.mark.parametrize("fmt", ["xml", "application/fhir+xml", "text/xml", "html", "ttl", ""])
@pytest.mark.parametrize("accept", [None, "application/fhir+json", "application/json", "*/*"])
def test_check_acceptable_format_other_than_json_is_refused(fmt: str, accept: str | None) -> None:
    with pytest.raises(NotAcceptable) as info:
        check_acceptable(accept, fmt)

    assert info.value.status == 406
    assert info.value.diagnostics == (
        "_format must be json: this server answers in application/fhir+json only."
    )
