"""Code tables: CSV files of local codes, with `file:line` on every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import MappingError
from bridge.mapping.tables import Entry, load_table

TABLES_DIR = Path(__file__).resolve().parents[2] / "mappings" / "hospital" / "tables"
GENDER = "http://hl7.org/fhir/administrative-gender"
HEADER = "local,display,system,code\n"


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "sex.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_table(path, "tables/sex.csv")
    return [str(p) for p in caught.value.problems]


def test_load_table_real_sex_table() -> None:
    table = load_table(TABLES_DIR / "sex.csv", "mappings/hospital/tables/sex.csv")
    assert table.name == "sex"
    assert table.file == "mappings/hospital/tables/sex.csv"
    assert table.by_local["F"] == Entry("F", "Female", GENDER, "female")
    assert table.by_code["other"].local == "O"
    assert table.codes() == ["male", "female", "unknown", "other"]


@pytest.mark.parametrize("name", ["language", "marital", "sex"])
def test_load_table_every_hospital_table_loads(name: str) -> None:
    table = load_table(TABLES_DIR / f"{name}.csv", name)
    lines = (TABLES_DIR / f"{name}.csv").read_text(encoding="utf-8").splitlines()
    assert len(table.by_local) == len([line for line in lines[1:] if line.strip()])


def test_load_table_trims_cells_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "sex.csv"
    path.write_text(
        f" local , display , system , code \n\n M , Male , {GENDER} , male \n,,,\n",
        encoding="utf-8",
    )
    table = load_table(path, "sex.csv")
    assert table.by_local == {"M": Entry("M", "Male", GENDER, "male")}


def test_load_table_quoted_cell_may_hold_a_comma(tmp_path: Path) -> None:
    path = tmp_path / "marital.csv"
    path.write_text(HEADER + 'SEP,"Separated, legally",urn:x,L\n', encoding="utf-8")
    assert load_table(path, "marital.csv").by_local["SEP"].display == "Separated, legally"


@pytest.mark.parametrize(
    "header",
    ["local,display,code,system\n", "local,display,system\n", "code\n", ""],
    ids=["order", "missing-column", "one-column", "empty-file"],
)
def test_load_table_bad_header_is_line_one(tmp_path: Path, header: str) -> None:
    assert _problems(tmp_path, header + f"M,Male,{GENDER},male\n") == [
        "tables/sex.csv:1:1: the header must be local,display,system,code"
    ]


def test_load_table_duplicate_local_code_names_its_line(tmp_path: Path) -> None:
    text = (
        HEADER  # 1
        + f"M,Male,{GENDER},male\n"  # 2
        + f"F,Female,{GENDER},female\n"  # 3
        + f"M,Man,{GENDER},male\n"  # 4
    )
    assert _problems(tmp_path, text) == ["tables/sex.csv:4:1: local code 'M' is listed twice"]


def test_load_table_wrong_column_count_names_its_line(tmp_path: Path) -> None:
    text = HEADER + f"M,Male,{GENDER},male\nF,Female,female\n"  # line 3 has 3 columns
    assert _problems(tmp_path, text) == ["tables/sex.csv:3:1: expected 4 columns, found 3"]


def test_load_table_empty_local_or_code_names_its_line(tmp_path: Path) -> None:
    text = HEADER + f",Male,{GENDER},male\nF,Female,{GENDER},\n"
    assert _problems(tmp_path, text) == [
        "tables/sex.csv:2:1: 'local' and 'code' must not be empty",
        "tables/sex.csv:3:1: 'local' and 'code' must not be empty",
    ]


def test_load_table_several_problems_are_reported_together(tmp_path: Path) -> None:
    text = (
        HEADER  # 1
        + f"M,Male,{GENDER},male\n"  # 2
        + "F,Female\n"  # 3
        + "\n"  # 4
        + f"M,Male again,{GENDER},male\n"  # 5
        + f"U,Unknown,{GENDER},unknown,extra\n"  # 6
    )
    assert _problems(tmp_path, text) == [
        "tables/sex.csv:3:1: expected 4 columns, found 2",
        "tables/sex.csv:5:1: local code 'M' is listed twice",
        "tables/sex.csv:6:1: expected 4 columns, found 5",
    ]


def test_load_table_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(MappingError) as caught:
        load_table(tmp_path / "nope.csv", "tables/nope.csv")
    assert str(caught.value) == "tables/nope.csv:1:1: cannot read table: No such file or directory"


def test_load_table_excel_csv_utf8_with_byte_order_mark_loads(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" writes a byte-order mark and CRLF line ends.
    path = tmp_path / "sex.csv"
    path.write_bytes(("\ufeff" + HEADER + f"M,Male,{GENDER},male\n").replace("\n", "\r\n").encode())
    assert load_table(path, "sex.csv").by_local == {"M": Entry("M", "Male", GENDER, "male")}


def test_load_table_empty_system_names_its_line(tmp_path: Path) -> None:
    text = HEADER + f"F,Female,{GENDER},female\nM,Male,,male\n"
    assert _problems(tmp_path, text) == [
        "tables/sex.csv:3:1: local code 'M' has no system; give the URI of the code system "
        "that defines 'male'"
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            (HEADER + "M,Male,urn:x,male\nF,F").encode() + b"\xe9male,urn:x,female\n",
            "tables/sex.csv:3:4: the file must be UTF-8, but byte 0xe9 is not; save it as UTF-8",
        ),
        (
            (HEADER + "M,Male,urn:x,male\n").encode("utf-16"),
            "tables/sex.csv:1:1: the file must be UTF-8, but it is UTF-16; save it as UTF-8",
        ),
    ],
    ids=["latin-1", "utf-16"],
)
def test_load_table_not_utf8_names_the_byte_and_its_position(
    tmp_path: Path, data: bytes, expected: str
) -> None:
    path = tmp_path / "sex.csv"
    path.write_bytes(data)
    with pytest.raises(MappingError) as caught:
        load_table(path, "tables/sex.csv")
    assert str(caught.value) == expected
