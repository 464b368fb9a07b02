"""Code tables: local legacy codes and the standard codes they stand for.

A table is a CSV file in the system folder's `tables/` with the header
`local,display,system,code`, one row per local code. The file is UTF-8, with
or without the byte-order mark Excel's "CSV UTF-8" writes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import MappingError, Problem
from bridge.mapping.loader import read_utf8

__all__ = ["CodeTable", "Entry", "load_table"]

HEADER = ["local", "display", "system", "code"]


@dataclass(frozen=True)
class Entry:
    local: str
    display: str
    system: str
    code: str


@dataclass(frozen=True)
class CodeTable:
    name: str
    file: str
    by_local: dict[str, Entry]
    by_code: dict[str, Entry]

    def codes(self) -> list[str]:
        return list(self.by_code)


def load_table(path: Path, display: str) -> CodeTable:
    problems: list[Problem] = []
    by_local: dict[str, Entry] = {}
    by_code: dict[str, Entry] = {}
    rows = list(csv.reader(read_utf8(path, display, "table").splitlines()))
    if not rows or [c.strip() for c in rows[0]] != HEADER:
        raise MappingError([Problem(display, 1, 1, f"the header must be {','.join(HEADER)}")])
    for number, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 4:
            problems.append(Problem(display, number, 1, f"expected 4 columns, found {len(row)}"))
            continue
        entry = Entry(*(c.strip() for c in row))
        if not entry.local or not entry.code:
            problems.append(Problem(display, number, 1, "'local' and 'code' must not be empty"))
            continue
        if not entry.system:
            # Every coding the table gives carries it: FHIR allows no empty system.
            message = (
                f"local code '{entry.local}' has no system; give the URI of the code system "
                f"that defines '{entry.code}'"
            )
            problems.append(Problem(display, number, 1, message))
            continue
        if entry.local in by_local:
            problems.append(
                Problem(display, number, 1, f"local code '{entry.local}' is listed twice")
            )
            continue
        by_local[entry.local] = entry
        # Several local codes may map to one standard code; the first is used for writes.
        by_code.setdefault(entry.code, entry)
    if problems:
        raise MappingError(problems)
    return CodeTable(path.stem, display, by_local, by_code)
