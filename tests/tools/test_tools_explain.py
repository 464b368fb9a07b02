"""bridge explain: the envelopes a FHIR request becomes, dry and against a live system."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from bridge.cli import main
from bridge.errors import ConfigError, UnknownResourceType
from bridge.mapping.compiler import compile_system
from bridge.mock import MockHospital
from bridge.tools.explain import explain, load_body
from tests.support import ROOT


def _systems() -> list:
    return [compile_system(ROOT / "mappings" / "hospital", {})]


def _body(block: str) -> etree._Element:
    xml = block.split("\n", 1)[1]
    root = etree.fromstring(xml.encode())
    return root[-1][0]


def test_explain_dry_run_shows_the_search_envelope_with_the_token_redacted() -> None:
    blocks, result = explain("GET /fhir/Patient?family=O'Brien&birthdate=1980-01-02", _systems())
    assert result is None
    assert blocks[0] == "# hospital: Login (opens the session; credentials redacted)"
    assert blocks[1].startswith("# hospital: FindPatients -> ")
    assert len(blocks) == 2
    body = _body(blocks[1])
    assert [(etree.QName(c).localname, c.text) for c in body] == [
        ("LastName", "O'Brien"),
        ("DOB", "01/02/1980"),
    ]
    assert "<ns1:SessionId>***</ns1:SessionId>" in blocks[1]
    assert "bridge-dev-password" not in "".join(blocks)


def test_explain_unknown_resource_type_is_an_error() -> None:
    with pytest.raises(UnknownResourceType):
        explain("GET /fhir/Nope/1", _systems())


@pytest.mark.e2e
def test_explain_output_is_what_the_live_system_receives(mock_hospital: MockHospital) -> None:
    request = "GET /fhir/Patient?family=Smith&gender=female&_count=3"
    dry, _ = explain(request, _systems())
    live, result = explain(request, _systems(), against=mock_hospital.url)
    assert result is not None
    assert result.startswith("HTTP 200")
    assert '"resourceType": "Bundle"' in result
    # The live run sent exactly what the dry run shows (apart from the endpoint).
    strip = [b.split("\n", 1)[-1] for b in dry]
    assert strip == [b.split("\n", 1)[-1] for b in live]
    assert mock_hospital.stats()["ehr"]["calls"]["FindPatients"] == 1
    assert "Smith" in live[1]


_FIX = "give --body a file holding the request body as FHIR JSON"


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        (
            "bad.json",
            lambda p: p.write_text('{"resourceType": "Observation",\n bad'),
            f"2:2: not valid JSON: unexpected character, expected a string key; {_FIX}",
        ),
        (
            "missing.json",
            lambda p: None,
            f"1:1: cannot read file: No such file or directory; {_FIX}",
        ),
        ("folder", lambda p: p.mkdir(), f"1:1: cannot read file: Is a directory; {_FIX}"),
    ],
)
def test_explain_body_that_is_not_a_json_file_is_one_line_naming_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    make: Callable[[Path], object],
    problem: str,
) -> None:
    body = tmp_path / name
    make(body)
    with pytest.raises(ConfigError) as caught:
        load_body(body)
    assert str(caught.value) == f"{body}:{problem}"
    system = str(ROOT / "mappings" / "hospital")
    assert main(["explain", "POST /fhir/Observation", "--system", system, "--body", str(body)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"{body}:{problem}"]
