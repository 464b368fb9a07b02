"""`bridge check`: exit status and file:line messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, copy_mappings


def _check(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "check", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_check_clean_mappings_exit_0() -> None:
    result = _check()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "mappings/billing: ok (Claim)",
        "mappings/hospital: ok (AllergyIntolerance, Condition, Observation, Patient)",
        "mappings/lab: ok (DiagnosticReport, Observation)",
        "mappings/pharmacy: ok (MedicationRequest)",
        "mappings/scheduling: ok (Appointment, Practitioner, Slot)",
    ]


def test_check_reports_a_planted_mistake_with_file_line_and_exit_1(tmp_path: Path) -> None:
    folder = copy_mappings(tmp_path)
    mapping = folder / "Patient.yaml"
    text = mapping.read_text()
    mapping.write_text(text.replace("    from: DOB\n", "    from: DOB2\n", 1))
    line = next(
        i for i, row in enumerate(mapping.read_text().splitlines(), 1) if "from: DOB2" in row
    )
    result = _check("mappings/hospital", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"mappings/hospital/Patient.yaml:{line}:5: field 'birthDate': element 'DOB2' is not in "
        "Patient; known: MRN, Name, DOB, Sex, AddressLine1, AddressLine2, City, State, Zip, "
        "Phone, MaritalStatus, Language, DeceasedFlag, DeceasedDate"
    ]


def test_check_reports_two_systems_claiming_one_interaction(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    shutil.copytree(ROOT / "wsdl", tmp_path / "wsdl")
    shutil.copytree(tmp_path / "mappings" / "hospital", tmp_path / "mappings" / "ehr2")
    system = tmp_path / "mappings" / "ehr2" / "system.yaml"
    system.write_text(system.read_text().replace("system: hospital", "system: ehr2"))
    result = _check(cwd=tmp_path)
    assert result.returncode == 1
    assert (
        "mappings/hospital/Patient.yaml:1:1: resource 'Patient' read is already served by "
        "system 'ehr2' (mappings/ehr2/Patient.yaml); a gateway serves each interaction of a "
        "resource type from one system"
    ) in result.stderr.splitlines()


def test_check_refuses_an_alias_bomb_at_once(tmp_path: Path) -> None:
    # 1 KB of nested aliases stands for 10^9 values: it used to hang and take gigabytes.
    folder = copy_mappings(tmp_path)
    levels = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    mapping = folder / "Patient.yaml"
    text = mapping.read_text()
    mapping.write_text(text + "\n".join(levels) + "\n")
    line = len(text.splitlines()) + 1
    result = _check("mappings/hospital", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"mappings/hospital/Patient.yaml:{line}:5: YAML anchors are not supported (found "
        "'&a0'); remove it and write the value out where it is used"
    ]


def test_check_refuses_a_mapping_file_it_would_not_read(tmp_path: Path) -> None:
    # A .yml file was skipped: its resource silently missing from the gateway.
    folder = copy_mappings(tmp_path)
    (folder / "Condition.yaml").rename(folder / "Condition.yml")
    result = _check(cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "mappings/hospital/Condition.yml:1:1: mapping files end in .yaml; rename it to "
        "Condition.yaml"
    ]


def test_check_refuses_a_misnamed_system_file(tmp_path: Path) -> None:
    # Without system.yaml, a plain `bridge check` skipped the folder and said ok.
    folder = copy_mappings(tmp_path)
    (folder / "system.yaml").rename(folder / "system.yml")
    result = _check(cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "mappings/hospital/system.yml:1:1: mapping files end in .yaml; rename it to system.yaml"
    ]


def test_check_with_no_system_folder_says_so(tmp_path: Path) -> None:
    result = _check(cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "mappings:1:1: no system folder found (mappings/<system>/system.yaml); run from the "
        "folder that holds mappings/, or name the system folders"
    ]


def test_check_refuses_a_fault_issue_fhir_does_not_have(tmp_path: Path) -> None:
    # It was served as an OperationOutcome whose issue code no FHIR client knows.
    folder = copy_mappings(tmp_path)
    system = folder / "system.yaml"
    text = system.read_text()
    system.write_text(text.replace("issue: not-found", "issue: notfound", 1))
    line = next(i for i, row in enumerate(system.read_text().splitlines(), 1) if "notfound" in row)
    result = _check(cwd=tmp_path)
    assert result.returncode == 1
    (message,) = result.stderr.splitlines()
    assert message.startswith(f"mappings/hospital/system.yaml:{line}:")
    assert "issue: Input should be 'invalid', 'structure'," in message
    assert message.endswith("(got 'notfound')")


def test_check_refuses_resource_types_fhir_does_not_have(tmp_path: Path) -> None:
    # A misspelt target or _include type answered every such search with nothing.
    condition = copy_mappings(tmp_path) / "Condition.yaml"
    condition.write_text(condition.read_text().replace("target: Patient", "target: Patinet", 1))
    lab = copy_mappings(tmp_path, "lab") / "DiagnosticReport.yaml"
    lab.write_text(lab.read_text().replace("{resource: Observation,", "{resource: Observatoin,"))
    result = _check(cwd=tmp_path)
    assert result.returncode == 1
    assert [line.split(":", 3)[::3] for line in result.stderr.splitlines()] == [
        [
            "mappings/hospital/Condition.yaml",
            " 'Patinet' is not a FHIR R4 resource type; give the referred type as FHIR spells "
            "it, like Patient",
        ],
        [
            "mappings/lab/DiagnosticReport.yaml",
            " 'Observatoin' is not a FHIR R4 resource type; give the included type as FHIR "
            "spells it, like Observation",
        ],
    ]


def test_check_leaves_folders_that_are_no_systems_alone(tmp_path: Path) -> None:
    # mappings/ kept as a repository of its own holds .github/; templates have no system.yaml.
    copy_mappings(tmp_path)
    (tmp_path / "mappings" / ".github").mkdir()
    (tmp_path / "mappings" / ".github" / "dependabot.yml").write_text("version: 2\n")
    (tmp_path / "mappings" / "_templates").mkdir()
    (tmp_path / "mappings" / "_templates" / "Patient.yaml").write_text("resource: Patient\n")
    result = _check(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "mappings/hospital: ok (AllergyIntolerance, Condition, Observation, Patient)"
    ]


def test_check_refuses_an_endpoint_that_is_not_a_url(tmp_path: Path) -> None:
    # Every request answered 503 ("unavailable"), and nothing said why.
    system = copy_mappings(tmp_path) / "system.yaml"
    system.write_text(system.read_text().replace('"http://127.0.0.1:8081/ehr"', '"ehr:8081"'))
    result = _check(cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "mappings/hospital/system.yaml:9:3: the endpoint's default 'ehr:8081' is not an "
        "http:// or https:// URL; give the address the legacy system answers SOAP at, like "
        "https://ehr.example.org/soap (or only its path, /soap, where the gateway config "
        "gives the system an origin)"
    ]
    # An operator's value is named by its variable, not shown.
    env = {**os.environ, "BRIDGE_HOSPITAL_URL": "ftp://ehr"}
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "check"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert "the endpoint from BRIDGE_HOSPITAL_URL is not an http://" in result.stderr
    assert "ftp://ehr" not in result.stderr


def test_check_takes_an_endpoint_that_is_a_path_for_an_origin_to_complete(
    tmp_path: Path,
) -> None:
    system = copy_mappings(tmp_path) / "system.yaml"
    system.write_text(system.read_text().replace('"http://127.0.0.1:8081/ehr"', '"/ehr"'))
    result = _check(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
