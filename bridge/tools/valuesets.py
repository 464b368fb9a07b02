"""`bridge check`: code tables against the FHIR value sets their elements require.

A table behind an element with a required binding may only give codes of
that value set. Where clients search by that element (a parameter sent to the
legacy system and named like the element, e.g. `gender`), the table must also
cover every code of the set, or some valid FHIR values could not reach it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from bridge.errors import Problem
from bridge.mapping.compiled import CompiledField, CompiledResource, CompiledSystem

__all__ = ["check_value_sets", "one_way_fields"]

_DATA = Path(__file__).resolve().parent.parent / "fhir" / "data" / "required-bindings.json"


@functools.cache
def _bindings() -> dict[str, frozenset[str]]:
    raw = json.loads(_DATA.read_text(encoding="utf-8"))
    return {k: frozenset(v) for k, v in raw.items() if not k.startswith("_")}


def _where(f: CompiledField) -> tuple[str, int]:
    file, _, line = f.where.rpartition(":")
    return file, int(line) if line.isdigit() else 1


def _walk(
    resource: CompiledResource,
    fields: tuple[CompiledField, ...],
    prefix: list[str],
    searched: set[str],
    problems: list[Problem],
) -> None:
    written = resource.create is not None or bool(resource.update)
    for f in fields:
        path = [*prefix, *(s.name for s in f.steps if s.name)]
        if f.children:
            _walk(resource, f.children, path, searched, problems)
            continue
        key = ".".join([resource.type, *path])
        allowed = _bindings().get(key)
        table = getattr(f.pipeline.steps[-1], "table", None) if f.pipeline.steps else None
        if allowed is None or table is None:
            continue
        file, line = _where(f)
        codes = set(table.by_code)
        foreign = sorted(codes - allowed)
        if foreign:
            problems.append(
                Problem(
                    file,
                    line,
                    1,
                    f"field '{'.'.join(path)}': table '{table.name}' gives {', '.join(foreign)}, "
                    f"not in the required value set; allowed: {', '.join(sorted(allowed))}",
                )
            )
        if f.writes and (written or path[-1] in searched):
            missing = sorted(allowed - codes)
            if missing and path[-1] in searched:
                problems.append(
                    Problem(
                        file,
                        line,
                        1,
                        f"field '{'.'.join(path)}': table '{table.name}' has no local code for "
                        f"{', '.join(missing)}, so searches for them cannot reach the legacy "
                        "system; add rows for them",
                    )
                )


def check_value_sets(system: CompiledSystem) -> list[Problem]:
    problems: list[Problem] = []
    for resource in system.resources.values():
        searched = set()
        if resource.search is not None:
            searched = {p.name for p in resource.search.params.values() if p.pushed}
        _walk(resource, resource.fields, [], searched, problems)
    return problems


def one_way_fields(system: CompiledSystem) -> list[str]:
    """Notes naming the fields of written resources that only read (one-way transforms)."""
    notes: list[str] = []

    def walk(
        resource: CompiledResource, fields: tuple[CompiledField, ...], prefix: list[str]
    ) -> None:
        for f in fields:
            path = [*prefix, *(s.name for s in f.steps if s.name)]
            if f.children:
                walk(resource, f.children, path)
                continue
            one_way = [s.name for s in f.pipeline.steps if not s.invertible]
            if f.local is not None and f.reads and not f.writes and one_way:
                notes.append(
                    f"{f.where}: note: field '{'.'.join(path)}' works one way (legacy to FHIR): "
                    f"{', '.join(one_way)} cannot be reversed, so writes leave it out"
                )

    for resource in system.resources.values():
        if resource.create is not None or resource.update:
            walk(resource, resource.fields, [])
    return notes
