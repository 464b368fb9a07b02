"""bridge test: golden cases beside the mappings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.mapping.compiler import compile_system
from bridge.tools.golden import check_samples, run_cases
from tests.support import copy_mappings


def test_golden_cases_of_the_hospital_pass() -> None:
    system = compile_system(Path("mappings/hospital"), {})
    results = run_cases(system)
    assert results
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]


def test_golden_case_failure_shows_a_readable_diff(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    expected = folder / "tests" / "patient_middle_name.expected.json"
    data = json.loads(expected.read_text())
    data["birthDate"] = "1900-01-01"
    expected.write_text(json.dumps(data))
    results = {r.name: r for r in run_cases(compile_system(folder, {}))}
    failed = results["patient_middle_name"]
    assert not failed.ok
    assert '-  "birthDate": "1900-01-01",' in failed.detail
    assert "+  " in failed.detail


def test_golden_case_without_its_expectation_fails(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    tests = folder / "tests"
    shutil.copy(tests / "patient_middle_name.response.xml", tests / "orphan.response.xml")
    results = {r.name: r for r in run_cases(compile_system(folder, {}))}
    assert not results["orphan"].ok
    assert "orphan.expected.json is missing" in results["orphan"].detail


@pytest.mark.parametrize(
    ("source", "orphan", "missing"),
    [
        ("patient_middle_name.expected.json", "lone.expected.json", "lone.response.xml"),
        ("vitals_weight.expected.xml", "lone.expected.xml", "lone.request.json"),
    ],
)
def test_golden_expectation_without_its_case_fails(
    tmp_path: Path, source: str, orphan: str, missing: str
) -> None:
    # A renamed or deleted answer must not leave its expectation passing unseen.
    folder = copy_mappings(tmp_path)
    tests = folder / "tests"
    shutil.copy(tests / source, tests / orphan)
    results = {r.name: r for r in run_cases(compile_system(folder, {}))}
    assert not results["lone"].ok
    assert f"has no {missing} beside it" in results["lone"].detail


def _cases_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the hospital's folder, run from its root: files read mappings/hospital/..."""
    copy_mappings(tmp_path)
    monkeypatch.chdir(tmp_path)
    return Path("mappings/hospital/tests")


def test_golden_case_with_broken_json_names_file_line_and_fix_and_the_others_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = _cases_in(tmp_path, monkeypatch)
    (tests / "patient_middle_name.expected.json").write_text("{bad")
    (tests / "vitals_weight.request.json").write_text('{\n  "resourceType": "Observation",\n  x')
    results = {r.name: r for r in run_cases(compile_system(Path("mappings/hospital"), {}))}
    assert {name for name, r in results.items() if not r.ok} == {
        "patient_middle_name",
        "vitals_weight",
    }
    assert len(results) == 6
    assert results["patient_middle_name"].detail == (
        "mappings/hospital/tests/patient_middle_name.expected.json:1:2: not valid JSON: "
        "unexpected character, expected a string key; it must hold the FHIR resource (or a "
        "list of them) the mapping builds from the answer"
    )
    assert results["vitals_weight"].detail == (
        "mappings/hospital/tests/vitals_weight.request.json:3:3: not valid JSON: unexpected "
        "character, expected a string key; it must hold the FHIR resource a client sends"
    )


def test_golden_case_with_broken_expected_xml_names_file_line_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = _cases_in(tmp_path, monkeypatch)
    (tests / "vitals_weight.expected.xml").write_text("<x>")
    results = {r.name: r for r in run_cases(compile_system(Path("mappings/hospital"), {}))}
    assert [name for name, r in results.items() if not r.ok] == ["vitals_weight"]
    assert results["vitals_weight"].detail == (
        "mappings/hospital/tests/vitals_weight.expected.xml:1:4: not well-formed XML: "
        "Premature end of data in tag x line 1; it must hold the SOAP request body element "
        "the mapping writes"
    )


_BROKEN_ANSWER = (
    "mappings/hospital/tests/patient_middle_name.response.xml:1:11: not well-formed XML: "
    "Opening and ending tag mismatch: b line 1 and a; it must hold the legacy system's SOAP "
    "answer, as it sends it"
)


def test_golden_case_with_broken_response_xml_names_the_file_in_test_and_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = _cases_in(tmp_path, monkeypatch)
    (tests / "patient_middle_name.response.xml").write_text("<a><b></a>")
    (tests / "patient_non_ascii.response.xml").write_text("<a/>")
    system = compile_system(Path("mappings/hospital"), {})
    results = {r.name: r for r in run_cases(system)}
    assert [name for name, r in results.items() if not r.ok] == [
        "patient_middle_name",
        "patient_non_ascii",
    ]
    assert results["patient_middle_name"].detail == _BROKEN_ANSWER
    not_soap = (
        "mappings/hospital/tests/patient_non_ascii.response.xml:1:1: not a SOAP answer the "
        "gateway accepts: the legacy system did not answer with a SOAP envelope; it must hold "
        "the legacy system's SOAP answer, as it sends it"
    )
    assert results["patient_non_ascii"].detail == not_soap
    assert [str(p) for p in check_samples(system)] == [_BROKEN_ANSWER, not_soap]


def test_golden_file_that_cannot_be_read_is_a_failed_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = _cases_in(tmp_path, monkeypatch)
    (tests / "patient_middle_name.response.xml").unlink()
    (tests / "patient_middle_name.response.xml").mkdir()
    system = compile_system(Path("mappings/hospital"), {})
    problem = (
        "mappings/hospital/tests/patient_middle_name.response.xml:1:1: cannot read file: "
        "Is a directory"
    )
    assert {r.name: r for r in run_cases(system)}["patient_middle_name"].detail == problem
    assert [str(p) for p in check_samples(system)] == [problem]


def test_bridge_test_reports_broken_golden_files_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tests = _cases_in(tmp_path, monkeypatch)
    (tests / "patient_middle_name.response.xml").write_text("<a><b></a>")
    (tests / "vitals_weight.expected.xml").write_text("<x>")
    assert main(["test", "mappings/hospital"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[2:4] == ["FAIL hospital/patient_middle_name", _BROKEN_ANSWER]
    assert out[-1] == "4 passed, 2 failed"
