"""The runner: legacy XML to FHIR (golden files), FHIR search values to legacy.

Each `fixtures/hospital/<name>.xml` is a SOAP response as the mock EHR (spyne)
sends it; `<name>.json` next to it is the exact resource the gateway must build.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from lxml import etree

from bridge.mapping.compiled import RunContext
from bridge.mapping.runner import (
    BadValue,
    Criterion,
    NoMatch,
    _close,
    _fill,
    _plan,
    _texts,
    build_resource,
    search_values,
)
from bridge.mapping.writer import legacy_record
from bridge.soap.xml import parse_envelope

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hospital"
GET_PATIENT = sorted(p.stem for p in FIXTURES.glob("patient_*.xml"))
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.7777.1"
GENDER = "http://hl7.org/fhir/administrative-gender"


def _record(patient: Any, name: str) -> etree._Element:
    body = parse_envelope((FIXTURES / f"{name}.xml").read_bytes(), "GetPatient", None)
    record = body.find(patient.read.record)
    assert record is not None
    return record


def _expected(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def _built(patient: Any, name: str) -> dict[str, Any]:
    return build_resource(patient, _record(patient, name))


def _search_page(patient: Any) -> list[dict[str, Any]]:
    data = (FIXTURES / "find_patients_obrien.xml").read_bytes()
    body = parse_envelope(data, "FindPatients", None)
    return [build_resource(patient, r) for r in body.findall(patient.search.records)]


# -- golden files ----------------------------------------------------------------


def test_fixtures_cover_the_hospital_cases() -> None:
    assert GET_PATIENT == [
        "patient_deceased_date",
        "patient_deceased_flag_only",
        "patient_impossible_dob",
        "patient_malformed_dob",
        "patient_middle_name",
        "patient_no_middle_no_phone",
        "patient_non_ascii",
        "patient_obrien_ampersand",
        "patient_unknown_codes",
    ]
    for name in GET_PATIENT:
        assert (FIXTURES / f"{name}.json").is_file()


@pytest.mark.parametrize("name", [n for n in GET_PATIENT if not n.endswith("_dob")])
def test_build_resource_matches_golden_file(patient, name: str) -> None:
    assert _built(patient, name) == _expected(name)


def test_build_resource_search_page_matches_golden_file(patient) -> None:
    assert _search_page(patient) == _expected("find_patients_obrien")


def test_build_resource_name_with_middle_name(patient) -> None:
    built = _built(patient, "patient_middle_name")
    assert built["name"] == [{"use": "official", "family": "Green", "given": ["Cynthia", "M"]}]


def test_build_resource_name_without_middle_name(patient) -> None:
    # The EHR writes `Jones^Patricia^`: the empty third part is no given name.
    built = _built(patient, "patient_no_middle_no_phone")
    assert built["name"] == [{"use": "official", "family": "Jones", "given": ["Patricia"]}]


def test_build_resource_missing_phone_has_no_telecom(patient) -> None:
    assert "telecom" not in _built(patient, "patient_no_middle_no_phone")
    assert _built(patient, "patient_middle_name")["telecom"] == [
        {"system": "phone", "use": "home", "value": "(312) 555-0112"}
    ]


def test_build_resource_deceased_with_date_gives_datetime_only(patient) -> None:
    built = _built(patient, "patient_deceased_date")
    assert built["deceasedDateTime"] == "2021-03-14"
    assert "deceasedBoolean" not in built


def test_build_resource_deceased_flag_without_date_gives_boolean(patient) -> None:
    built = _built(patient, "patient_deceased_flag_only")
    assert built["deceasedBoolean"] is True
    assert "deceasedDateTime" not in built
    # No City: the address group is left out entirely, not as an empty shell.
    assert "address" not in built
    assert "communication" not in built


def test_build_resource_unknown_local_codes_keep_text_only(patient) -> None:
    built = _built(patient, "patient_unknown_codes")
    assert built["maritalStatus"] == {"text": "CIV"}
    assert built["communication"] == [{"language": {"text": "KLI"}, "preferred": True}]


def test_build_resource_keeps_apostrophes_and_unescapes_xml(patient) -> None:
    built = _built(patient, "patient_obrien_ampersand")
    assert built["name"][0]["family"] == "O'Brien"
    assert built["address"][0]["line"] == ["Smith & Sons Building", "Suite 5 <rear>"]


def test_build_resource_takes_a_repeated_elements_first_text_past_comments(patient) -> None:
    record = _record(patient, "patient_obrien_ampersand")
    first = record[0]
    again = etree.SubElement(record, first.tag)
    again.text = "someone-else"
    record.insert(1, etree.Comment(" a legacy system's note "))
    record.append(etree.ProcessingInstruction("audit", "x"))
    assert build_resource(patient, record)["id"] == first.text


def test_build_resource_keeps_non_ascii_text(patient) -> None:
    built = _built(patient, "patient_non_ascii")
    assert built["name"][0] == {
        "use": "official",
        "family": "Núñez-Łukasiewicz",
        "given": ["José", "Zoë"],
    }
    assert built["address"][0]["line"] == ["5 Rue de l\u2019Église"]
    assert built["address"][0]["city"] == "San José"


def _with(patient: Any, **texts: str | None) -> etree._Element:
    """A copy of a golden record with some child elements' texts replaced (None: removed)."""
    return _changed(_record(patient, "patient_middle_name"), texts)


def _changed(record: etree._Element, texts: dict[str, str | None]) -> etree._Element:
    """`record` with some child elements' texts replaced (None: removed)."""
    ns = etree.QName(record).namespace
    for tag, text in texts.items():
        child = record.find(f"{{{ns}}}{tag}")
        if text is None:
            if child is not None:
                record.remove(child)
            continue
        if child is None:
            child = etree.SubElement(record, f"{{{ns}}}{tag}")
        child.text = text
    return record


@pytest.mark.parametrize(
    ("name", "given"),
    [
        ("Doe^^Quinn", ["Quinn"]),  # a later item without the earlier ones: no hole left
        ("Doe^Ann^Quinn", ["Ann", "Quinn"]),
        ("Doe^ ^Quinn", ["Quinn"]),
        ("Doe^Ann^", ["Ann"]),
    ],
)
def test_build_resource_list_items_in_place_and_after_gaps(
    patient, name: str, given: list[str]
) -> None:
    built = build_resource(patient, _with(patient, Name=name))
    assert built["name"] == [{"use": "official", "family": "Doe", "given": given}]


@pytest.mark.parametrize(
    ("date", "flag", "deceased"),
    [
        (None, "Y", {"deceasedBoolean": True}),
        ("   ", "Y", {"deceasedBoolean": True}),  # only blanks: absent, as `exists` says
        ("", "N", {"deceasedBoolean": False}),
        ("03/14/2021", "Y", {"deceasedDateTime": "2021-03-14"}),
    ],
)
def test_build_resource_exists_conditions_treat_blank_text_as_absent(
    patient, date: str | None, flag: str, deceased: dict[str, Any]
) -> None:
    built = build_resource(patient, _with(patient, DeceasedDate=date, DeceasedFlag=flag))
    assert {k: v for k, v in built.items() if k.startswith("deceased")} == deceased


def test_build_resource_exists_true_skips_a_blank_element(patient) -> None:
    built = build_resource(patient, _with(patient, Phone=" \n "))
    assert "telecom" not in built
    built = build_resource(patient, _with(patient, City="\t"))
    assert "address" not in built


@pytest.mark.parametrize(
    ("name", "dob"),
    [("patient_malformed_dob", "1979-13-45"), ("patient_impossible_dob", "02/30/1980")],
)
def test_build_resource_malformed_dob_drops_birthdate_only_and_warns(
    patient, caplog: pytest.LogCaptureFixture, name: str, dob: str
) -> None:
    lines = (REPO / patient.file).read_text(encoding="utf-8").splitlines()
    where = f"{patient.file}:{lines.index('  - fhir: birthDate') + 1}"
    with caplog.at_level(logging.WARNING, logger="bridge.mapping"):
        built = _built(patient, name)
    assert built == _expected(name)
    assert "birthDate" not in built
    assert built["name"] and built["gender"] and built["address"]
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "bridge.mapping",
            "WARNING",
            f"legacy value dropped at {where}: not a date in the format MM/DD/YYYY",
        )
    ]
    assert dob not in caplog.text


# -- the generated builder against the plan it was made from -----------------------


def _filled(patient: Any, record: etree._Element) -> dict[str, Any]:
    """The resource as `_fill` builds it, field by field, from the same plan."""
    out: dict[str, Any] = {"resourceType": patient.type}
    holes: list[list[Any]] = []
    _fill(out, _plan(patient.fields), record, RunContext(), _texts(record), holes)
    _close(holes)
    return out


_VARIANTS = [
    {},
    {"Name": "   "},
    {"Name": None, "MRN": " "},
    {"Phone": "", "City": "\n", "Language": " "},
    {"DeceasedDate": " \t", "DeceasedFlag": "Y"},
    {"DeceasedDate": "03/14/2021", "DeceasedFlag": " "},
    {"City": "Hartford", "AddressLine1": " ", "AddressLine2": "Apt 2"},
    # The name's components (split inline by the builder, by `to_fhir` in `_fill`).
    {"Name": "Smith"},
    {"Name": "Smith^^"},
    {"Name": " ^ John ^"},
    {"Name": "^^^Extra^Parts"},
]


@pytest.mark.parametrize("name", GET_PATIENT)
@pytest.mark.parametrize("variant", _VARIANTS)
def test_generated_builder_builds_what_the_plan_says(
    patient, name: str, variant: dict[str, str | None]
) -> None:
    # The builder reads a child several fields use once (blank text: absent);
    # `_fill` reads it for each field.
    record = _changed(_record(patient, name), variant)
    assert build_resource(patient, record) == _filled(patient, record)


# -- FHIR validity -----------------------------------------------------------------


@pytest.mark.parametrize("name", GET_PATIENT)
def test_build_resource_is_valid_fhir(patient, name: str) -> None:
    model = get_fhir_model_class("Patient")
    model.model_validate(_built(patient, name))


def test_build_resource_search_page_is_valid_fhir(patient) -> None:
    model = get_fhir_model_class("Patient")
    for resource in _search_page(patient):
        model.model_validate(resource)


# -- search values --------------------------------------------------------------------


def _values(patient: Any, **criteria: Criterion) -> dict[str, Any]:
    """The legacy request elements the criteria fill (rendered as the gateway sends them)."""
    context = search_values(patient.search, {k: [v] for k, v in criteria.items()})
    return patient.search.call.request(context)


def test_search_values_birthdate_goes_legacy(patient) -> None:
    assert _values(patient, birthdate=Criterion("birthdate", "1980-05-07")) == {"DOB": "05/07/1980"}


def test_search_values_partial_birthdate_is_a_bad_value(patient) -> None:
    with pytest.raises(BadValue) as caught:
        _values(patient, birthdate=Criterion("birthdate", "1980-05"))
    assert str(caught.value) == "birthdate: needs a full date, YYYY-MM-DD"


@pytest.mark.parametrize("system", [None, GENDER, ""], ids=["no-system", "gender-system", "bar"])
def test_search_values_gender_code_goes_legacy(patient, system: str | None) -> None:
    assert _values(patient, gender=Criterion("gender", "male", system)) == {"Sex": "M"}


def test_search_values_gender_with_other_system_matches_nothing(patient) -> None:
    with pytest.raises(NoMatch):
        _values(patient, gender=Criterion("gender", "male", "http://snomed.info/sct"))


def test_search_values_unknown_gender_lists_accepted_codes(patient) -> None:
    with pytest.raises(BadValue) as caught:
        _values(patient, gender=Criterion("gender", "mail"))
    assert str(caught.value) == (
        "gender: not a code of table 'sex'; use one of: male, female, unknown, other"
    )


@pytest.mark.parametrize("system", [MRN_SYSTEM, None], ids=["declared-system", "no-system"])
def test_search_values_identifier_with_declared_system(patient, system: str | None) -> None:
    assert _values(patient, identifier=Criterion("identifier", "100001", system)) == {
        "MRN": "100001"
    }


@pytest.mark.parametrize("system", ["urn:oid:1.2.3", ""], ids=["other-system", "no-system-bar"])
def test_search_values_identifier_with_other_system_matches_nothing(patient, system: str) -> None:
    with pytest.raises(NoMatch):
        _values(patient, identifier=Criterion("identifier", "100001", system))


def test_search_values_several_criteria_fill_several_elements(patient) -> None:
    assert _values(
        patient,
        family=Criterion("family", "O'Brien"),
        given=Criterion("given", "Siob"),
        gender=Criterion("gender", "female"),
        _id=Criterion("_id", "100071"),
    ) == {"LastName": "O'Brien", "FirstName": "Siob", "Sex": "F", "MRN": "100071"}


def test_search_values_no_criteria_gives_no_values(patient) -> None:
    assert _values(patient) == {}


# -- lookups: which stored records match a write whose answer was lost ----------


def _vitals_reply(*readings: str) -> etree._Element:
    body = "".join(f"<e:Reading>{r}</e:Reading>" for r in readings)
    return etree.fromstring(
        f'<e:GetVitalsResponse xmlns:e="urn:hospital:ehr"><e:Readings>{body}'
        "</e:Readings></e:GetVitalsResponse>"
    )


def test_lookup_matches_the_values_written_numbers_as_numbers(hospital: Any) -> None:
    create = hospital.resources["Observation"].create
    assert create is not None and create.lookup is not None
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/100010"},
        "effectiveDateTime": "2026-11-20T12:00:00Z",
        "valueQuantity": {"value": 61, "unit": "/min", "system": "http://unitsofmeasure.org"},
    }
    ctx = RunContext(record=legacy_record(hospital.resources["Observation"], obs))
    reply = _vitals_reply(
        "<e:ReadingId>VS1</e:ReadingId><e:TypeCode>HR</e:TypeCode><e:Value>61.0</e:Value>"
        "<e:Unit>/min</e:Unit><e:TakenAt>11/20/2026 07:00:00</e:TakenAt>",
        # The same reading from a device: the write sent none, so it is another one.
        "<e:ReadingId>VS2</e:ReadingId><e:TypeCode>HR</e:TypeCode><e:Value>61</e:Value>"
        "<e:Unit>/min</e:Unit><e:TakenAt>11/20/2026 07:00:00</e:TakenAt>"
        "<e:DeviceId>W-1</e:DeviceId>",
        "<e:ReadingId>VS3</e:ReadingId><e:TypeCode>HR</e:TypeCode><e:Value>62</e:Value>"
        "<e:Unit>/min</e:Unit><e:TakenAt>11/20/2026 07:00:00</e:TakenAt>",
    )
    found = create.lookup.found([reply], ctx)
    assert [r.findtext(create.lookup.id or "") for r in found] == ["VS1"]
