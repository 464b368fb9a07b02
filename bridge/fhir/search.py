"""FHIR search parameters: parsed and checked before any legacy call.

The gateway passes the parameters a mapping declares, with their types. What
FHIR says happens to the rest: unknown parameters are ignored and left out of
the `self` link, or refused under `Prefer: handling=strict`.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bridge.errors import InvalidRequest

__all__ = ["ParamSpec", "SearchQuery", "SearchValue", "parse_search"]

# Parameters every search understands; the rest come from the mapping.
RESULT_PARAMS = {"_count", "_format", "_pretty", "_page", "_summary"}
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
_DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_SPLIT_COMMA = re.compile(r"(?<!\\),")


@dataclass(frozen=True)
class SearchValue:
    name: str
    value: str
    system: str | None = None
    prefix: str | None = None


@dataclass(frozen=True)
class ParamSpec:
    """What a declared parameter accepts."""

    type: str
    prefixes: frozenset[str] = frozenset({"eq"})  # date and number comparisons allowed
    full_date: bool = True  # the legacy system needs YYYY-MM-DD
    filtered: bool = False  # the gateway applies the parameter exactly (times too)

    @property
    def repeats(self) -> bool:
        # Two bounds of one date (ge and lt) are the usual range search.
        return self.type in ("date", "number") and len(self.prefixes) > 1


@dataclass
class SearchQuery:
    values: dict[str, SearchValue] = field(default_factory=dict)
    # Every value of each parameter (dates may come twice: ge and lt).
    all: dict[str, list[SearchValue]] = field(default_factory=dict)
    count: int = 20
    # The canonical search, as it goes into `self` and paging links.
    canonical: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _unescape(value: str) -> str:
    return re.sub(r"\\([\\,$|])", r"\1", value)


def _check_text(name: str, value: str) -> None:
    if any(ord(c) < 0x20 and c not in "\t" for c in value):
        raise InvalidRequest(f"{name}: the value contains control characters.")
    if len(value) > 256:
        raise InvalidRequest(f"{name}: the value is longer than 256 characters.")


def _parse_value(name: str, spec: ParamSpec, raw: str) -> SearchValue:
    kind = spec.type
    if _SPLIT_COMMA.search(raw):
        raise InvalidRequest(
            f"{name}: several values (a comma-separated OR) are not supported for this parameter."
        )
    if kind == "token":
        system: str | None = None
        code = raw
        if re.search(r"(?<!\\)\|", raw):
            system, code = re.split(r"(?<!\\)\|", raw, maxsplit=1)
            system = _unescape(system)
            _check_text(name, system)
        code = _unescape(code)
        if not code:
            raise InvalidRequest(f"{name}: a token needs a code, as code or system|code.")
        _check_text(name, code)
        return SearchValue(name, code, system=system)
    if kind == "date":
        prefix = None
        value = raw
        if raw[:2] in _DATE_PREFIXES:
            prefix, value = raw[:2], raw[2:]
        if spec.filtered and _DATETIME.match(value):
            # An instant or dateTime: the gateway compares it exactly; the legacy
            # system gets a day range around it (see mapping.runner).
            return SearchValue(name, value, prefix=prefix)
        if not _DATE.match(value):
            raise InvalidRequest(f"{name}: expected a date like 1980-01-02.")
        if (prefix or "eq") not in spec.prefixes:
            allowed = ", ".join(sorted(spec.prefixes))
            raise InvalidRequest(
                f"{name}: the prefix '{prefix or 'eq'}' is not supported; use {allowed}."
            )
        if spec.full_date and len(value) != 10:
            raise InvalidRequest(f"{name}: the legacy system needs a full date, YYYY-MM-DD.")
        try:
            datetime.date.fromisoformat((value + "-01-01")[:10] if len(value) < 10 else value)
        except ValueError:
            raise InvalidRequest(f"{name}: {value} is not a date on the calendar.") from None
        return SearchValue(name, value, prefix=prefix)
    if kind == "number":
        prefix = None
        value = raw
        if raw[:2] in _DATE_PREFIXES:
            prefix, value = raw[:2], raw[2:]
        try:
            float(value)
        except ValueError:
            raise InvalidRequest(f"{name}: expected a number.") from None
        return SearchValue(name, value, prefix=prefix)
    value = _unescape(raw)
    if not value.strip():
        raise InvalidRequest(f"{name}: the value must not be empty.")
    _check_text(name, value)
    return SearchValue(name, value)


def parse_search(
    items: Sequence[tuple[str, str]],
    declared: Mapping[str, str | ParamSpec],
    *,
    strict: bool,
    default_count: int,
    max_count: int,
) -> SearchQuery:
    """Parse a search's (name, value) pairs against the declared `{name: type}`."""
    query = SearchQuery(count=default_count)
    seen: set[str] = set()
    summary_count = False
    for key, raw in items:
        name, _, modifier = key.partition(":")
        if name in ("_format", "_pretty", "_page"):
            continue
        if name == "_count":
            if not (raw.isascii() and raw.isdigit()):
                raise InvalidRequest("_count must be a whole number.")
            # Any count above the cap is the cap; long digit strings never reach int().
            query.count = max_count if len(raw) > 9 else min(int(raw), max_count)
            continue
        if name == "_summary":
            if raw == "count":
                summary_count = True
            elif raw != "false":  # false is a full answer, as without it
                # true, text and data would leave elements out: not served, so
                # ignored as an unknown parameter is (or refused under strict).
                if strict:
                    raise InvalidRequest(
                        f"_summary={raw} is not supported; this server supports "
                        "_summary=count and _summary=false."
                    )
                query.ignored.append(key)
            continue
        if name not in declared:
            if strict:
                known = ", ".join(sorted(declared))
                raise InvalidRequest(
                    f"Unknown search parameter '{name}'; this server supports: {known}."
                )
            query.ignored.append(key)
            continue
        if modifier:
            raise InvalidRequest(f"{name}: the modifier ':{modifier}' is not supported.")
        spec = declared[name]
        if isinstance(spec, str):
            spec = ParamSpec(spec)
        if name in seen and not spec.repeats:
            raise InvalidRequest(f"{name}: repeating a parameter (AND) is not supported.")
        seen.add(name)
        value = _parse_value(name, spec, raw)
        query.values.setdefault(name, value)
        query.all.setdefault(name, []).append(value)
        query.canonical.append((name, raw))
    if summary_count:
        # The total only, as `_count=0` answers (and says in its `self` link).
        query.count = 0
    query.canonical.sort()
    return query
