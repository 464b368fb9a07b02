"""The seeded patient generator, in-process (no server, no spyne)."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from bridge.mock.data import SOAP_FIELDS, PatientRecord, generate, search_key


@pytest.fixture(scope="module")
def hospital() -> list[PatientRecord]:
    return generate(42, 5000)


def _date_key(mmddyyyy: str) -> tuple[int, int, int]:
    month, day, year = (int(p) for p in mmddyyyy.split("/"))
    return year, month, day


def test_generate_same_seed_gives_identical_data(hospital) -> None:
    assert generate(42, 5000) == hospital


def test_generate_different_seed_gives_different_data(hospital) -> None:
    other = generate(43, 5000)
    assert [r.mrn for r in other] == [r.mrn for r in hospital]
    assert sum(a != b for a, b in zip(other, hospital, strict=True)) > 4900


def test_generate_smaller_hospital_is_not_a_prefix_requirement() -> None:
    # Counts are independent runs, but each is itself deterministic.
    assert generate(7, 500) == generate(7, 500)
    assert len(generate(7, 0)) == 0


def test_generate_rejects_counts_beyond_six_digit_mrns() -> None:
    with pytest.raises(ValueError, match="6-digit MRNs"):
        generate(1, 900_000)


def test_generate_mrns_are_sequential_six_digit_strings(hospital) -> None:
    assert [r.mrn for r in hospital] == [str(n) for n in range(100001, 105001)]


def test_generate_is_fast() -> None:
    started = time.perf_counter()
    generate(1, 5000)
    assert time.perf_counter() - started < 1.0


def test_generate_common_surnames_span_several_pages(hospital) -> None:
    counts = Counter(r.last_name for r in hospital)
    for surname in ("Smith", "Johnson", "Garcia"):
        assert counts[surname] > 75, (surname, counts[surname])
    assert len(counts) >= 55
    # Spread, not a monoculture: no surname is more than a tenth.
    assert counts.most_common(1)[0][1] < 500


@pytest.mark.parametrize("count", [60, 500, 5000])
def test_generate_includes_names_that_exercise_encoding(count: int) -> None:
    records = generate(42, count)
    surnames = {r.last_name for r in records}
    for awkward in ("O'Brien", "Müller", "Núñez", "García-López", "D'Angelo", "Łukasiewicz"):
        assert awkward in surnames, (awkward, count)


def test_generate_includes_zoe_and_nguyen(hospital) -> None:
    assert any(r.first_name == "Zoë" for r in hospital)
    assert any(r.last_name == "Nguyen" for r in hospital)


def test_generate_values_have_the_legacy_formats(hospital) -> None:
    for r in hospital:
        assert re.fullmatch(r"[^^]+\^[^^]+\^[A-Z]?", r.name), r.name
        assert re.fullmatch(r"\d{2}/\d{2}/\d{4}", r.dob)
        assert 1930 <= _date_key(r.dob)[0] <= 2023
        assert r.sex in {"M", "F", "U"}
        assert re.fullmatch(r"[A-Z]{2}", r.state)
        assert re.fullmatch(r"\d{5}", r.zip)
        assert r.phone is None or re.fullmatch(r"\(\d{3}\) 555-01\d{2}", r.phone)
        assert r.marital_status in {"MAR", "SGL", "DIV", "WID", "SEP", "UNK"}
        assert r.language in {"ENG", "SPA", "CHI", "VIE", "FRE", "GER", "ARA", "RUS", "POR", "KOR"}
        assert r.deceased_flag in {"Y", "N"}


def test_generate_distributions_look_like_a_hospital(hospital) -> None:
    n = len(hospital)
    sexes = Counter(r.sex for r in hospital)
    assert 0 < sexes["U"] < 0.05 * n
    assert sum(r.phone is not None for r in hospital) > 0.8 * n
    assert 0 < sum(r.address_line2 is not None for r in hospital) < 0.3 * n
    assert sum(r.middle_name != "" for r in hospital) > 0.4 * n
    languages = Counter(r.language for r in hospital)
    assert languages.most_common(1)[0][0] == "ENG"
    assert languages["ENG"] > 0.7 * n
    assert len(languages) == 10


def test_generate_deceased_patients_mostly_have_a_later_date(hospital) -> None:
    deceased = [r for r in hospital if r.deceased_flag == "Y"]
    assert 0.03 * len(hospital) < len(deceased) < 0.07 * len(hospital)
    dated = [r for r in deceased if r.deceased_date is not None]
    assert 0 < len(deceased) - len(dated) < 0.3 * len(deceased)
    assert all(_date_key(r.deceased_date) >= _date_key(r.dob) for r in dated)
    assert all(r.deceased_date is None for r in hospital if r.deceased_flag == "N")


def test_to_soap_dict_uses_contract_names_in_order_and_omits_absent(hospital) -> None:
    record = next(r for r in hospital if r.phone is None and r.address_line2 is None)
    soap = record.to_soap_dict()
    assert list(soap) == [f for f in SOAP_FIELDS if f in soap]
    assert "Phone" not in soap
    assert "AddressLine2" not in soap
    assert soap["Name"] == f"{record.last_name}^{record.first_name}^{record.middle_name}"


def test_search_key_folds_case_and_normalises_unicode() -> None:
    assert search_key("MÜLLER") == search_key("müller")
    assert search_key("mu\u0308ller") == search_key("Müller")
    assert search_key("ŁUKASIEWICZ").startswith(search_key("łuk"))
