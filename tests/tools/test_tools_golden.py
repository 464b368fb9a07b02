"""bridge test: golden cases beside the mappings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bridge.mapping.compiler import compile_system
from bridge.tools.golden import run_cases
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
