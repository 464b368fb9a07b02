"""Deeper checks of `bridge check`: required elements, sample data, contained resources."""

from __future__ import annotations

from pathlib import Path

from bridge.mapping.compiler import compile_system
from bridge.mapping.runner import build_resource
from bridge.soap.xml import parse_envelope
from bridge.tools.golden import check_samples


def test_check_required_request_element_never_filled(hospital_copy) -> None:
    hospital_copy.edit("Patient.yaml", '  request: {MRN: "{id}"}\n', "")
    where = hospital_copy.at("Patient.yaml", "operation: GetPatient")
    assert hospital_copy.problems() == [
        f"{where}: request of GetPatient: the required element 'MRN' is never filled; "
        "give it a value in 'request'"
    ]


def test_check_samples_flag_an_invalid_resource(hospital_copy) -> None:
    hospital_copy.edit(
        "Patient.yaml",
        "  - fhir: birthDate\n    from: DOB\n    transform: [{date: MM/DD/YYYY}]\n",
        "  - fhir: birthDate\n    from: DOB\n",
    )
    system = compile_system(Path("mappings/hospital"), {})
    # One line, at the field that builds the element, naming the value, why, the fix
    # and the samples that showed it.
    where = hospital_copy.at("Patient.yaml", "  - fhir: birthDate").rsplit(":", 1)[0]
    assert [str(p) for p in check_samples(system, values=True)] == [
        f"{where}:1: Patient.birthDate built from the sample answer "
        "mappings/hospital/tests/find_patients_obrien.response.xml and 4 more is not valid "
        "FHIR: Value error, Date value string does not match spec regex. (value '11/30/1985'); "
        "make the field's value or transform give what Patient.birthDate takes"
    ]


def test_check_samples_quote_values_only_when_asked(hospital_copy) -> None:
    # A running gateway logs what a reload refuses: a sample may hold real data.
    hospital_copy.edit(
        "Patient.yaml",
        "  - fhir: birthDate\n    from: DOB\n    transform: [{date: MM/DD/YYYY}]\n",
        "  - fhir: birthDate\n    from: DOB\n",
    )
    system = compile_system(Path("mappings/hospital"), {})
    logged = [str(p) for p in check_samples(system)]
    assert logged
    assert all("(value " not in p and "/19" not in p for p in logged)


def test_check_samples_name_a_required_element_left_out(hospital_copy) -> None:
    # communication.language is required where there is a communication: the group's line.
    hospital_copy.edit(
        "Patient.yaml",
        "      - fhir: language\n        from: Language\n        transform: [{table: {name: "
        "language, as: CodeableConcept, unmapped: text}}]\n",
        "",
    )
    where = hospital_copy.at("Patient.yaml", "  - fhir: communication[0]").rsplit(":", 1)[0]
    system = compile_system(Path("mappings/hospital"), {})
    problems = [str(p) for p in check_samples(system)]
    assert problems
    assert problems[0].startswith(f"{where}:1: Patient.communication[0].language built from ")
    assert problems[0].endswith("map Patient.communication[0].language, which FHIR requires")


def test_check_samples_name_the_field_of_the_list_item_at_fault(hospital_copy) -> None:
    # Two groups build telecom: the second one's bad value is reported at its line.
    hospital_copy.edit(
        "Patient.yaml",
        "      - {fhir: value, from: Phone}\n",
        "      - {fhir: value, from: Phone}\n"
        "  - fhir: telecom[1]\n    fields:\n      - {fhir: rank, value: first}\n",
    )
    where = hospital_copy.at("Patient.yaml", "{fhir: rank, value: first}").rsplit(":", 1)[0]
    system = compile_system(Path("mappings/hospital"), {})
    problems = [str(p) for p in check_samples(system, values=True)]
    assert problems
    # A sample without a phone has it as telecom[0]: the same field, the same line.
    assert all(p.startswith(f"{where}:1: Patient.telecom[") for p in problems), problems
    assert all("(value 'first')" in p for p in problems)


def test_contained_group_builds_a_typed_resource(hospital_copy) -> None:
    hospital_copy.edit(
        "Patient.yaml",
        "  - fhir: active\n    value: true\n",
        "  - fhir: active\n    value: true\n"
        "  - fhir: contained[0]\n    resource: Organization\n    fields:\n"
        "      - {fhir: id, value: org1}\n      - {fhir: name, from: City}\n",
    )
    system = compile_system(Path("mappings/hospital"), {})
    reply = parse_envelope(
        Path("mappings/hospital/tests/patient_middle_name.response.xml").read_bytes(), "x", None
    )
    patient = system.resources["Patient"]
    assert patient.read is not None
    built = build_resource(patient, reply.find(patient.read.record))
    assert built["contained"][0]["resourceType"] == "Organization"
    assert built["contained"][0]["id"] == "org1"


def test_contained_group_checks_paths_against_its_type(hospital_copy) -> None:
    hospital_copy.edit(
        "Patient.yaml",
        "  - fhir: active\n    value: true\n",
        "  - fhir: active\n    value: true\n"
        "  - fhir: contained[0]\n    resource: Organization\n    fields:\n"
        "      - {fhir: nmae, from: City}\n",
    )
    where = hospital_copy.at("Patient.yaml", "fhir: nmae")
    assert hospital_copy.problems() == [
        f"{where}: field 'nmae': Organization has no element 'nmae'; did you mean 'name'?"
    ]


def test_check_table_giving_a_code_outside_the_required_value_set(hospital_copy) -> None:
    from bridge.tools.valuesets import check_value_sets

    hospital_copy.edit(
        "tables/sex.csv",
        "O,Other,http://hl7.org/fhir/administrative-gender,other",
        "O,Other,http://hl7.org/fhir/administrative-gender,nonbinary",
    )
    system = compile_system(Path("mappings/hospital"), {})
    messages = [p.message for p in check_value_sets(system)]
    assert (
        "field 'gender': table 'sex' gives nonbinary, not in the required value set; "
        "allowed: female, male, other, unknown"
    ) in messages


def test_check_searched_table_must_cover_the_value_set(hospital_copy) -> None:
    from bridge.tools.valuesets import check_value_sets

    hospital_copy.edit(
        "tables/sex.csv", "O,Other,http://hl7.org/fhir/administrative-gender,other\n", ""
    )
    system = compile_system(Path("mappings/hospital"), {})
    problems = check_value_sets(system)
    assert [p.message for p in problems] == [
        "field 'gender': table 'sex' has no local code for other, so searches for them "
        "cannot reach the legacy system; add rows for them"
    ]
    assert problems[0].file == "mappings/hospital/Patient.yaml"


def test_check_names_fields_that_work_one_way(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from bridge.tools.valuesets import one_way_fields

    root = Path(__file__).resolve().parents[2]
    shutil.copytree(root / "mappings" / "billing", tmp_path / "mappings" / "billing")
    shutil.copytree(root / "wsdl" / "billing", tmp_path / "wsdl" / "billing")
    monkeypatch.chdir(tmp_path)
    claim = Path("mappings/billing/Claim.yaml")
    claim.write_text(
        claim.read_text().replace(
            "  - fhir: billablePeriod.start\n    from: EncounterDate\n"
            "    transform: [{date: YYYYMMDD}]",
            "  - fhir: billablePeriod.start\n    from: EncounterDate\n"
            "    transform: [{regex: '^(\\\\d{8})$'}, {date: YYYYMMDD}]",
        )
    )
    notes = one_way_fields(compile_system(Path("mappings/billing"), {}))
    assert len(notes) == 1
    assert notes[0].startswith("mappings/billing/Claim.yaml:")
    assert notes[0].endswith(
        "note: field 'billablePeriod.start' works one way (legacy to FHIR): regex cannot "
        "be reversed, so writes leave it out"
    )


def test_check_each_over_an_element_that_cannot_repeat(hospital_copy) -> None:
    hospital_copy.edit(
        "AllergyIntolerance.yaml",
        "  - fhir: reaction[0]\n    when: {path: Reaction, exists: true}\n    fields:\n"
        '      - {fhir: "manifestation[0].text", from: Reaction}\n',
        "  - fhir: reaction\n    each: Reaction\n    fields:\n"
        '      - {fhir: "manifestation[0].text", from: .}\n',
    )
    where = hospital_copy.at("AllergyIntolerance.yaml", "each: Reaction")
    assert hospital_copy.problems() == [
        f"{where}: field 'reaction': 'Reaction' occurs at most once in the WSDL, so 'each' "
        "has nothing to repeat; map it as a group without 'each'"
    ]
