"""Named transforms, both directions, built as mapping files name them."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bridge.mapping.tables import CodeTable, load_table
from bridge.mapping.transforms import Component, Pipeline, TransformError, build_transform

TABLES_DIR = Path(__file__).resolve().parents[2] / "mappings" / "hospital" / "tables"
GENDER = "http://hl7.org/fhir/administrative-gender"
MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"


@pytest.fixture(scope="module")
def tables() -> dict[str, CodeTable]:
    return {p.stem: load_table(p, f"tables/{p.name}") for p in sorted(TABLES_DIR.glob("*.csv"))}


def _build(step: dict[str, Any], tables: dict[str, CodeTable] | None = None) -> Any:
    return build_transform(step, tables or {})


# -- date ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("legacy", "fhir"),
    [
        ("05/07/1980", "1980-05-07"),
        ("12/31/1999", "1999-12-31"),
        ("5/7/1980", "1980-05-07"),
        (" 02/29/1980 ", "1980-02-29"),
    ],
)
def test_date_to_fhir_reads_mm_dd_yyyy(legacy: str, fhir: str) -> None:
    assert _build({"date": "MM/DD/YYYY"}).to_fhir(legacy) == fhir


@pytest.mark.parametrize(
    ("fhir", "legacy"), [("1980-05-07", "05/07/1980"), ("2001-12-09", "12/09/2001")]
)
def test_date_to_legacy_writes_mm_dd_yyyy(fhir: str, legacy: str) -> None:
    assert _build({"date": {"format": "MM/DD/YYYY"}}).to_legacy(fhir) == legacy


def test_date_other_format_round_trips() -> None:
    date = _build({"date": "DD.MM.YYYY"})
    assert date.to_fhir("07.05.1980") == "1980-05-07"
    assert date.to_legacy("1980-05-07") == "07.05.1980"


@pytest.mark.parametrize(
    "legacy",
    [
        "1980-05-07",
        "13/01/1980",
        "00/10/1980",
        "05/32/1980",
        "05/07/80",
        "May 7 1980",
    ],
)
def test_date_to_fhir_malformed_legacy_date_raises_without_the_value(legacy: str) -> None:
    with pytest.raises(TransformError) as caught:
        _build({"date": "MM/DD/YYYY"}).to_fhir(legacy)
    assert str(caught.value) == "not a date in the format MM/DD/YYYY"
    assert legacy.strip() not in str(caught.value)


@pytest.mark.parametrize("legacy", ["02/30/1980", "04/31/1980", "02/29/1981"])
def test_date_to_fhir_impossible_calendar_day_is_refused(legacy: str) -> None:
    # Month and day are each in range, but the day does not exist: 1980-02-30
    # is not a FHIR date, and the resource would fail validation as a whole.
    with pytest.raises(TransformError) as caught:
        _build({"date": "MM/DD/YYYY"}).to_fhir(legacy)
    assert str(caught.value) == "not a date in the format MM/DD/YYYY"


@pytest.mark.parametrize(
    ("legacy", "fhir"),
    [
        ("\u0660\u0665/\u0660\u0667/\u0661\u0669\u0668\u0660", "1980-05-07"),  # Arabic-Indic
        ("05/07/1980\n", "1980-05-07"),
        (" \t5/7/1980\u3000", "1980-05-07"),
        ("01/01/0000", None),  # no year 0 in FHIR
        ("1/1/10000", None),
        ("05/07/1980x", None),
    ],
)
def test_date_to_fhir_ascii_digits_and_others_agree(legacy: str, fhir: str | None) -> None:
    # ASCII digits take a shorter way than other digits and other types: both
    # give the same date, and refuse the same text.
    date = _build({"date": "MM/DD/YYYY"})
    if fhir is None:
        with pytest.raises(TransformError):
            date.to_fhir(legacy)
    else:
        assert date.to_fhir(legacy) == fhir


class _Text(str):
    """Text that is not exactly `str`: the date transform takes its general way."""


@pytest.mark.parametrize("fmt", ["MM/DD/YYYY", "YYYYMMDD", " YYYY-MM-DD", "DD.MM.YYYY\n"])
@pytest.mark.parametrize(
    "legacy",
    ["05/07/1980", " 5/7/1980 ", "19800507", "1980-05-07", " 1980-05-07", "07.05.1980", "x"],
)
def test_date_to_fhir_both_ways_give_the_same_answer(fmt: str, legacy: str) -> None:
    date = _build({"date": fmt})

    def answer(value: str) -> str | None:
        try:
            return str(date.to_fhir(value))
        except TransformError:
            return None

    assert answer(legacy) == answer(_Text(legacy))


def _written_token_by_token(fmt: str, moment: datetime.datetime) -> str:
    """The legacy text of a local time, each token's first place replaced in turn."""
    out = fmt
    for token, value in (
        ("YYYY", f"{moment.year:04d}"),
        ("MM", f"{moment.month:02d}"),
        ("DD", f"{moment.day:02d}"),
        ("HH", f"{moment.hour:02d}"),
        ("mm", f"{moment.minute:02d}"),
        ("ss", f"{moment.second:02d}"),
    ):
        out = out.replace(token, value, 1)
    return out


@pytest.mark.parametrize(
    "fmt",
    [
        "MM/DD/YYYY HH:mm:ss",
        "YYYY-MM-DD HH:mm",
        "YYYYMMDDHHmmss",
        "HH:mm DD.MM.YYYY ss",
        "100% MM/DD/YYYY HH:mm",  # a literal % stays one
        "MMM DD YYYY HHH mm {x}",  # a token's first place only; braces are literal
    ],
)
@pytest.mark.parametrize(
    "fhir", ["2026-11-20T08:00:00-05:00", "0999-01-02T03:04:05Z", "2026-07-01T14:30:59+02:00"]
)
def test_datetime_to_legacy_writes_each_tokens_first_place(fmt: str, fhir: str) -> None:
    zone = "America/New_York"
    local = datetime.datetime.fromisoformat(fhir.replace("Z", "+00:00")).astimezone(ZoneInfo(zone))
    written = _build({"datetime": {"format": fmt, "zone": zone}}).to_legacy(fhir)
    assert written == _written_token_by_token(fmt, local)


@pytest.mark.parametrize(
    "fhir",
    [
        "9999-12-31T23:59:59-14:00",  # 10000-01-01 in New York
        "9999-12-31T20:00:00-10:00",  # 01:00 on 10000-01-01 in New York
        "0001-01-01T00:00:00+14:00",  # the year 0 in New York
        "0001-01-01T03:00:00Z",
    ],
)
def test_datetime_to_legacy_refuses_a_moment_past_the_calendar_in_the_legacy_zone(
    fhir: str,
) -> None:
    with pytest.raises(TransformError) as caught:
        _build({"datetime": {"format": "MM/DD/YYYY HH:mm", "zone": "America/New_York"}}).to_legacy(
            fhir
        )
    assert str(caught.value) == (
        "needs a dateTime that falls within the years 0001 to 9999 in the legacy system's "
        "time zone (America/New_York)"
    )


@pytest.mark.parametrize(
    ("zone", "fhir", "legacy"),
    [
        # Their UTC times are off the calendar; their local times are not.
        ("America/New_York", "9999-12-31T23:59:59-05:00", "12/31/9999 23:59"),
        ("Asia/Tokyo", "0001-01-01T00:30:00+09:00", "01/01/0001 00:48"),  # Tokyo's LMT
        ("America/New_York", "9999-12-31", "12/31/9999 00:00"),
    ],
)
def test_datetime_to_legacy_writes_the_calendar_edges_it_can(
    zone: str, fhir: str, legacy: str
) -> None:
    step = {"datetime": {"format": "MM/DD/YYYY HH:mm", "zone": zone}}
    assert _build(step).to_legacy(fhir) == legacy


@pytest.mark.parametrize("legacy", ["1e999", "-1e999", "nan"])
def test_quantity_to_fhir_refuses_numbers_that_are_not_finite(legacy: str) -> None:
    step = {"quantity": {"legacy": "[lb_av]", "fhir": "kg", "decimals": 0}}
    with pytest.raises(TransformError) as caught:
        _build(step).to_fhir(legacy)
    assert str(caught.value) in ("not a finite number", "not a number")


def test_quantity_to_legacy_never_writes_infinity() -> None:
    step = {"quantity": {"legacy": "[lb_av]", "fhir": "kg"}}
    with pytest.raises(TransformError) as caught:
        _build(step).to_legacy({"value": 1e308, "code": "kg"})
    assert str(caught.value) == "the Quantity's value is too large to write in '[lb_av]'"
    with pytest.raises(TransformError) as caught:
        _build(step).to_legacy({"value": 10**400, "code": "kg"})
    assert str(caught.value) == "the Quantity's value is not a number"


def test_date_to_fhir_reads_a_value_that_is_not_text() -> None:
    assert _build({"date": "YYYYMMDD"}).to_fhir(19800507) == "1980-05-07"


@pytest.mark.parametrize("fhir", ["1980", "1980-05", "1980-05-07T10:00:00Z", "05/07/1980"])
def test_date_to_legacy_refuses_partial_or_other_dates(fhir: str) -> None:
    with pytest.raises(TransformError) as caught:
        _build({"date": "MM/DD/YYYY"}).to_legacy(fhir)
    assert str(caught.value) == "needs a full date, YYYY-MM-DD"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"date": "YYYY-MM"}, "date format 'YYYY-MM' must contain YYYY, MM and DD"),
        ({"date": {}}, "'date' needs a format, e.g. MM/DD/YYYY"),
        ({"date": {"format": 5}}, "argument 'format' must be text"),
        ({"date": {"fmt": "MM/DD/YYYY"}}, "unknown argument 'fmt'; known: format"),
    ],
)
def test_date_bad_arguments_are_refused(step: dict[str, Any], message: str) -> None:
    with pytest.raises(TransformError) as caught:
        _build(step)
    assert str(caught.value) == message


# -- split -----------------------------------------------------------------------


@pytest.mark.parametrize(("index", "expected"), [(0, "Green"), (1, "Cynthia"), (2, "M"), (3, None)])
def test_split_takes_one_component(index: int, expected: str | None) -> None:
    assert _build({"split": {"separator": "^", "index": index}}).to_fhir("Green^Cynthia^M") == (
        expected
    )


def test_split_empty_component_is_absent() -> None:
    split = _build({"split": {"separator": "^", "index": 2}})
    assert split.to_fhir("Jones^Patricia^") is None
    assert split.to_fhir("Jones^Patricia^  ") is None


def test_split_shorthand_is_the_separator() -> None:
    assert _build({"split": "|"}).to_fhir("a|b") == "a"


def test_split_reverses_into_a_component_the_writer_joins() -> None:
    split = _build({"split": {"separator": "^", "index": 1}})
    assert split.invertible is True
    assert split.to_legacy("Green") == Component("^", 1, "Green")
    with pytest.raises(TransformError) as caught:
        split.to_legacy("Gr^een")
    assert str(caught.value) == "a value may not contain the separator '^'"


def test_regex_cannot_be_reversed() -> None:
    regex = _build({"regex": "^([A-Z]+)"})
    assert regex.invertible is False
    assert regex.to_fhir("ABC123") == "ABC"
    with pytest.raises(TransformError) as caught:
        regex.to_legacy("ABC")
    assert str(caught.value) == "transform 'regex' cannot be reversed"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"split": {"separator": ""}}, "'separator' must not be empty"),
        ({"split": {"sep": "^"}}, "unknown argument 'sep'; known: separator, index"),
    ],
)
def test_split_bad_arguments_are_refused(step: dict[str, Any], message: str) -> None:
    with pytest.raises(TransformError) as caught:
        _build(step)
    assert str(caught.value) == message


# -- table -----------------------------------------------------------------------


def test_table_as_code(tables) -> None:
    assert _build({"table": "sex"}, tables).to_fhir("F") == "female"


def test_table_as_coding(tables) -> None:
    table = _build({"table": {"name": "sex", "as": "Coding"}}, tables)
    assert table.to_fhir(" M ") == {"system": GENDER, "code": "male", "display": "Male"}


def test_table_as_codeable_concept(tables) -> None:
    table = _build({"table": {"name": "marital", "as": "CodeableConcept"}}, tables)
    assert table.to_fhir("MAR") == {
        "coding": [{"system": MARITAL, "code": "M", "display": "Married"}],
        "text": "Married",
    }


def test_table_without_display_leaves_display_and_text_out(tmp_path: Path) -> None:
    csv = tmp_path / "units.csv"
    csv.write_text("local,display,system,code\nKG,,http://unitsofmeasure.org,kg\n")
    tables = {"units": load_table(csv, "units.csv")}
    table = _build({"table": {"name": "units", "as": "CodeableConcept"}}, tables)
    assert table.to_fhir("KG") == {
        "coding": [{"system": "http://unitsofmeasure.org", "code": "kg"}]
    }


def test_table_unmapped_text_keeps_the_local_code_as_text(tables) -> None:
    table = _build(
        {"table": {"name": "marital", "as": "CodeableConcept", "unmapped": "text"}}, tables
    )
    assert table.to_fhir("CIV") == {"text": "CIV"}


@pytest.mark.parametrize(
    "step",
    [
        {"table": {"name": "marital", "as": "CodeableConcept"}},
        {"table": {"name": "marital", "as": "Coding", "unmapped": "text"}},
        {"table": {"name": "marital", "unmapped": "text"}},
    ],
    ids=["drop-by-default", "text-needs-concept-coding", "text-needs-concept-code"],
)
def test_table_unmapped_code_is_dropped(tables, step: dict[str, Any]) -> None:
    assert _build(step, tables).to_fhir("CIV") is None


def test_table_reverse_lookup_from_code(tables) -> None:
    table = _build({"table": "sex"}, tables)
    assert table.to_legacy("female") == "F"
    assert table.to_legacy("unknown") == "U"


def test_table_reverse_lookup_from_coding_and_concept(tables) -> None:
    table = _build({"table": {"name": "sex", "as": "CodeableConcept"}}, tables)
    assert table.to_legacy({"system": GENDER, "code": "male"}) == "M"
    assert (
        table.to_legacy({"coding": [{"system": "urn:other", "code": "x"}, {"code": "other"}]})
        == "O"
    )


def test_table_reverse_lookup_refuses_foreign_system(tables) -> None:
    table = _build({"table": {"name": "sex", "as": "Coding"}}, tables)
    with pytest.raises(TransformError) as caught:
        table.to_legacy({"system": "urn:other", "code": "male"})
    assert str(caught.value) == "no code from table 'sex'"


def test_table_reverse_lookup_unknown_code_raises_without_the_value(tables) -> None:
    table = _build({"table": "sex"}, tables)
    with pytest.raises(TransformError) as caught:
        table.to_legacy("mail")
    assert str(caught.value) == "not a code of table 'sex'"
    assert table.accepted() == ["male", "female", "unknown", "other"]


def test_table_first_local_code_wins_for_writes(tmp_path: Path) -> None:
    csv = tmp_path / "sex.csv"
    csv.write_text(
        f"local,display,system,code\nM,Male,{GENDER},male\nMA,Male,{GENDER},male\n",
        encoding="utf-8",
    )
    table = _build({"table": "sex"}, {"sex": load_table(csv, "sex.csv")})
    assert table.to_fhir("MA") == "male"
    assert table.to_legacy("male") == "M"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (
            {"table": "colour"},
            "no code table 'colour'; known: allergens, allergy-status, language, marital, "
            "problem-status, severity, sex, vital-types",
        ),
        (
            {"table": {"name": "sex", "as": "string"}},
            "'as' must be code, Coding or CodeableConcept, not 'string'",
        ),
        (
            {"table": {"name": "sex", "unmapped": "keep"}},
            "'unmapped' must be drop or text, not 'keep'",
        ),
    ],
)
def test_table_bad_arguments_are_refused(tables, step: dict[str, Any], message: str) -> None:
    with pytest.raises(TransformError) as caught:
        _build(step, tables)
    assert str(caught.value) == message


def test_table_without_any_tables_says_where_to_add_them() -> None:
    with pytest.raises(TransformError) as caught:
        _build({"table": "sex"})
    assert str(caught.value) == "no code table 'sex'; known: none (add CSV files to tables/)"


# -- boolean -----------------------------------------------------------------------


def test_boolean_both_ways() -> None:
    # YAML reads `{true: "Y", false: "N"}` with boolean keys.
    flag = _build({"boolean": {True: "Y", False: "N"}})
    assert (flag.to_fhir("Y"), flag.to_fhir(" N ")) == (True, False)
    assert (flag.to_legacy(True), flag.to_legacy("false")) == ("Y", "N")
    assert flag.accepted() == ["true", "false"]


def test_boolean_other_value_raises_without_the_value() -> None:
    flag = _build({"boolean": {"true": "Y", "false": "N"}})
    with pytest.raises(TransformError) as caught:
        flag.to_fhir("maybe")
    assert str(caught.value) == "expected 'Y' or 'N'"
    with pytest.raises(TransformError) as caught:
        flag.to_legacy("maybe")
    assert str(caught.value) == "expected true or false"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"boolean": "Y"}, "'boolean' needs {true: ..., false: ...}"),
        ({"boolean": {"true": "Y"}}, "'boolean' needs both 'true' and 'false'"),
    ],
)
def test_boolean_bad_arguments_are_refused(step: dict[str, Any], message: str) -> None:
    with pytest.raises(TransformError) as caught:
        _build(step)
    assert str(caught.value) == message


# -- template ------------------------------------------------------------------------


def test_template_round_trip() -> None:
    ref = _build({"template": "Patient/{}"})
    assert ref.to_fhir("100001") == "Patient/100001"
    assert ref.to_legacy(ref.to_fhir("100001")) == "100001"
    around = _build({"template": {"template": "urn:mrn:{}:v1"}})
    assert around.to_legacy(around.to_fhir("42")) == "42"


def test_template_reverse_refuses_other_text() -> None:
    with pytest.raises(TransformError) as caught:
        _build({"template": "Patient/{}"}).to_legacy("Practitioner/7")
    assert str(caught.value) == "expected Patient/…"


@pytest.mark.parametrize("template", ["Patient/", "{}/{}"])
def test_template_needs_one_hole(template: str) -> None:
    with pytest.raises(TransformError) as caught:
        _build({"template": template})
    assert str(caught.value) == "a template must contain '{}' exactly once"


# -- numbers ----------------------------------------------------------------------------


def test_number_transforms_both_ways() -> None:
    assert _build({"integer": None}).to_fhir(" 42 ") == 42
    assert _build({"decimal": None}).to_fhir("36.6") == 36.6
    assert _build({"decimal": None}).to_legacy(36.6) == "36.6"


@pytest.mark.parametrize(
    ("kind", "message"), [("integer", "not an integer"), ("decimal", "not a decimal")]
)
def test_number_malformed_value_raises_without_the_value(kind: str, message: str) -> None:
    with pytest.raises(TransformError) as caught:
        _build({kind: None}).to_fhir("forty")
    assert str(caught.value) == message


# -- steps and pipelines --------------------------------------------------------------


def test_build_transform_unknown_name_lists_known() -> None:
    with pytest.raises(TransformError) as caught:
        _build({"datum": "MM/DD/YYYY"})
    assert str(caught.value) == (
        "unknown transform 'datum'; known: boolean, case, date, datetime, decimal, integer, "
        "join, quantity, regex, split, table, template"
    )


def test_build_transform_step_has_one_key() -> None:
    with pytest.raises(TransformError) as caught:
        _build({"date": "MM/DD/YYYY", "split": "^"})
    assert str(caught.value) == "each transform step is one key naming the transform"


def test_pipeline_invertible_only_when_every_step_is(tables) -> None:
    date = _build({"date": "MM/DD/YYYY"})
    regex = _build({"regex": "^(.)"})
    table = _build({"table": "sex"}, tables)
    assert Pipeline().invertible is True
    assert Pipeline((date,)).invertible is True
    assert Pipeline((table,)).invertible is True
    assert Pipeline((regex,)).invertible is False
    assert Pipeline((regex, table)).invertible is False


def test_pipeline_runs_steps_in_order_and_reverses_them(tables) -> None:
    pipeline = Pipeline(
        (_build({"split": {"separator": "^", "index": 1}}), _build({"table": "sex"}, tables))
    )
    assert pipeline.to_fhir("X^F") == "female"
    assert pipeline.to_fhir("X") is None  # split gave nothing: table is not asked
    reversible = Pipeline((_build({"template": "S-{}"}), _build({"template": "Patient/{}"})))
    assert reversible.to_fhir("7") == "Patient/S-7"
    assert reversible.to_legacy("Patient/S-7") == "7"


def test_pipeline_accepted_comes_from_the_last_step(tables) -> None:
    assert Pipeline((_build({"table": "sex"}, tables),)).accepted() == [
        "male",
        "female",
        "unknown",
        "other",
    ]
    assert Pipeline((_build({"date": "MM/DD/YYYY"}),)).accepted() is None
    assert Pipeline().accepted() is None
