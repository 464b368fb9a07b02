"""parse_search: FHIR search parameters checked before any legacy call."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bridge.errors import InvalidRequest
from bridge.fhir.search import SearchQuery, SearchValue, parse_search

DECLARED = {
    "family": "string",
    "given": "string",
    "gender": "token",
    "identifier": "token",
    "birthdate": "date",
}
SECRET = "Zbigniewska"  # a searched value that must never appear in a message


def parse(
    items: Sequence[tuple[str, str]], *, strict: bool = False, max_count: int = 100
) -> SearchQuery:
    return parse_search(items, DECLARED, strict=strict, default_count=20, max_count=max_count)


def refused(items: Sequence[tuple[str, str]], *, strict: bool = False) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse(items, strict=strict)
    assert info.value.status == 400
    assert info.value.code == "invalid"
    return info.value


# -- declared types ----------------------------------------------------------------


def test_parse_search_string_value() -> None:
    query = parse([("family", "Smith")])

    assert query.values == {"family": SearchValue("family", "Smith")}
    assert query.count == 20
    assert query.ignored == []


def test_parse_search_string_value_keeps_non_ascii() -> None:
    query = parse([("family", "Łukasiewicz"), ("given", "Jürgen")])

    assert query.values["family"].value == "Łukasiewicz"
    assert query.values["given"].value == "Jürgen"


def test_parse_search_string_value_unescapes_comma() -> None:
    assert parse([("family", r"Smith\,Jones")]).values["family"].value == "Smith,Jones"


def test_parse_search_token_code_only() -> None:
    value = parse([("gender", "female")]).values["gender"]

    assert value == SearchValue("gender", "female", system=None)


def test_parse_search_token_system_and_code() -> None:
    value = parse([("identifier", "urn:oid:2.16.840.1.113883.3.7777.1|100001")]).values[
        "identifier"
    ]

    assert value.system == "urn:oid:2.16.840.1.113883.3.7777.1"
    assert value.value == "100001"


def test_parse_search_token_empty_system() -> None:
    value = parse([("identifier", "|100001")]).values["identifier"]

    assert value.system == ""
    assert value.value == "100001"


def test_parse_search_token_escaped_bar_is_part_of_the_code() -> None:
    value = parse([("identifier", r"AB\|12")]).values["identifier"]

    assert value.system is None
    assert value.value == "AB|12"


def test_parse_search_token_escaped_bar_in_system() -> None:
    value = parse([("identifier", r"urn:a\|b|42")]).values["identifier"]

    assert value.system == "urn:a|b"
    assert value.value == "42"


@pytest.mark.parametrize("raw", ["", "http://hl7.org/fhir/administrative-gender|", "|"])
def test_parse_search_token_without_code_is_refused(raw: str) -> None:
    error = refused([("gender", raw)])

    assert error.diagnostics == "gender: a token needs a code, as code or system|code."


def test_parse_search_date_exact() -> None:
    value = parse([("birthdate", "1980-01-02")]).values["birthdate"]

    assert value == SearchValue("birthdate", "1980-01-02", prefix=None)


def test_parse_search_date_eq_prefix_is_accepted() -> None:
    value = parse([("birthdate", "eq1980-01-02")]).values["birthdate"]

    assert value.value == "1980-01-02"
    assert value.prefix == "eq"


@pytest.mark.parametrize("prefix", ["ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"])
def test_parse_search_date_other_prefixes_are_refused(prefix: str) -> None:
    error = refused([("birthdate", f"{prefix}1980-01-02")])

    assert error.diagnostics == (f"birthdate: the prefix '{prefix}' is not supported; use eq.")


@pytest.mark.parametrize("raw", ["1980", "1980-01", "eq1980-01"])
def test_parse_search_date_partial_is_refused(raw: str) -> None:
    error = refused([("birthdate", raw)])

    assert error.diagnostics == "birthdate: the legacy system needs a full date, YYYY-MM-DD."


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "yesterday",
        "1980/01/02",
        "02/01/1980",
        "1980-1-2",
        "19800102",
        "1980-01-02T10:00:00Z",
        "80-01-02",
        "ge",
        "1980-01-02 ",
        " 1980-01-02",
    ],
)
def test_parse_search_date_malformed_is_refused(raw: str) -> None:
    error = refused([("birthdate", raw)])

    assert error.diagnostics == "birthdate: expected a date like 1980-01-02."


@pytest.mark.parametrize("raw", ["1980-13-01", "1980-00-10", "1980-02-30", "1981-04-31"])
def test_parse_search_date_not_on_the_calendar_is_refused(raw: str) -> None:
    refused([("birthdate", raw)])


# -- _count --------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "count"), [("0", 0), ("1", 1), ("50", 50), ("100", 100)])
def test_parse_search_count(raw: str, count: int) -> None:
    assert parse([("_count", raw)]).count == count


@pytest.mark.parametrize("raw", ["101", "1000", "99999999999999999999"])
def test_parse_search_count_is_capped_at_max_count(raw: str) -> None:
    assert parse([("_count", raw)]).count == 100


def test_parse_search_count_default() -> None:
    assert parse([]).count == 20


@pytest.mark.parametrize("raw", ["abc", "", "-1", "1.5", " 5", "5 ", "+5", "0x10", "1e3"])
def test_parse_search_count_not_a_whole_number_is_refused(raw: str) -> None:
    error = refused([("_count", raw)])

    assert error.diagnostics == "_count must be a whole number."


@pytest.mark.parametrize("raw", ["²", "5²"])
def test_parse_search_count_odd_digits_are_invalid_request_not_a_crash(raw: str) -> None:
    # str.isdigit() is True for these, but int() cannot read them.
    error = refused([("_count", raw)])

    assert error.diagnostics == "_count must be a whole number."


def test_parse_search_count_with_thousands_of_digits_is_the_cap_not_a_crash() -> None:
    # int() refuses strings this long; the value is above any cap anyway.
    assert parse([("_count", "9" * 5000)]).count == parse([("_count", "500")]).count


# -- unknown parameters ------------------------------------------------------------


def test_parse_search_unknown_params_are_ignored_and_listed() -> None:
    query = parse([("family", "Smith"), ("_sort", "family"), ("address-city", "Boston")])

    assert query.ignored == ["_sort", "address-city"]
    assert set(query.values) == {"family"}
    assert query.canonical == [("family", "Smith")]


def test_parse_search_unknown_param_with_modifier_is_listed_with_it() -> None:
    assert parse([("name:exact", "Smith")]).ignored == ["name:exact"]


def test_parse_search_unknown_param_is_refused_when_strict() -> None:
    error = refused([("family", "Smith"), ("address-city", SECRET)], strict=True)

    assert error.diagnostics == (
        "Unknown search parameter 'address-city'; this server supports: "
        "birthdate, family, gender, given, identifier."
    )


def test_parse_search_result_params_are_not_unknown_when_strict() -> None:
    query = parse(
        [("_count", "5"), ("_format", "json"), ("_pretty", "true"), ("_page", "x")], strict=True
    )

    assert query.count == 5
    assert query.values == {}


# -- what is refused -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "modifier"),
    [
        ("family:exact", "exact"),
        ("family:contains", "contains"),
        ("family:missing", "missing"),
        ("gender:not", "not"),
        ("identifier:of-type", "of-type"),
        ("birthdate:missing", "missing"),
    ],
)
def test_parse_search_modifiers_are_refused(key: str, modifier: str) -> None:
    name = key.partition(":")[0]
    error = refused([(key, "true")])

    assert error.diagnostics == f"{name}: the modifier ':{modifier}' is not supported."


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("family", "Smith,Jones"),
        ("gender", "male,female"),
        ("identifier", "urn:x|1,urn:x|2"),
        ("birthdate", "1980-01-02,1981-01-02"),
    ],
)
def test_parse_search_comma_or_is_refused(name: str, raw: str) -> None:
    error = refused([(name, raw)])

    assert error.diagnostics == (
        f"{name}: several values (a comma-separated OR) are not supported for this parameter."
    )


def test_parse_search_repeated_param_is_refused() -> None:
    error = refused([("family", "Smith"), ("family", "Jones")])

    assert error.diagnostics == "family: repeating a parameter (AND) is not supported."


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\n", "\r", "\x1f"])
def test_parse_search_string_control_characters_are_refused(char: str) -> None:
    error = refused([("family", f"Sm{char}ith")])

    assert error.diagnostics == "family: the value contains control characters."


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\n"])
def test_parse_search_token_code_control_characters_are_refused(char: str) -> None:
    error = refused([("identifier", f"urn:x|10{char}01")])

    assert error.diagnostics == "identifier: the value contains control characters."


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\n"])
def test_parse_search_token_system_control_characters_are_refused(char: str) -> None:
    refused([("identifier", f"urn:x{char}y|1001")])


def test_parse_search_blank_string_is_refused() -> None:
    error = refused([("family", "   ")])

    assert error.diagnostics == "family: the value must not be empty."


def test_parse_search_long_value_is_refused() -> None:
    assert parse([("family", "x" * 256)]).values["family"].value == "x" * 256
    error = refused([("family", "x" * 257)])

    assert error.diagnostics == "family: the value is longer than 256 characters."


# -- canonical form ----------------------------------------------------------------------


def test_parse_search_canonical_is_sorted_and_leaves_out_result_params() -> None:
    query = parse(
        [
            ("given", "Ann"),
            ("_count", "5"),
            ("family", "Smith"),
            ("_format", "json"),
            ("identifier", "urn:x|1"),
            ("unknown", "x"),
            ("birthdate", "eq1980-01-02"),
        ]
    )

    assert query.canonical == [
        ("birthdate", "eq1980-01-02"),
        ("family", "Smith"),
        ("given", "Ann"),
        ("identifier", "urn:x|1"),
    ]


def test_parse_search_canonical_is_the_same_for_any_order() -> None:
    a = parse([("given", "Ann"), ("family", "Smith"), ("_count", "5")])
    b = parse([("_count", "5"), ("family", "Smith"), ("given", "Ann")])

    assert a.canonical == b.canonical


# -- messages --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "items",
    [
        [("family", f"{SECRET}\x00")],
        [("family", f"{SECRET},{SECRET}")],
        [("family", SECRET * 30)],
        [("family:exact", SECRET)],
        [("family", SECRET), ("family", SECRET)],
        [("given", f"\x1b{SECRET}")],
        [("identifier", f"{SECRET}|")],
        [("identifier", f"urn:x|{SECRET}\x00")],
    ],
)
def test_parse_search_messages_never_echo_the_searched_value(
    items: list[tuple[str, str]],
) -> None:
    error = refused(items)

    assert SECRET not in error.diagnostics
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
