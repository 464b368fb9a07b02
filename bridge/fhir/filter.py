"""FHIR search semantics applied to resources the gateway built.

When a legacy search is broader than the FHIR one (a date range with
inclusive ends, no code filter at all), the mapping names the FHIR element a
parameter tests and the gateway keeps only the resources that match.
"""

from __future__ import annotations

from calendar import monthrange
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from bridge.fhir.search import SearchValue

__all__ = ["matches"]

_LAST_SECOND = (23, 59, 59)


def _values(node: Any, path: Sequence[str]) -> list[Any]:
    current = [node]
    for name in path:
        nxt: list[Any] = []
        for item in current:
            value = item.get(name) if isinstance(item, dict) else None
            if isinstance(value, list):
                nxt.extend(value)
            elif value is not None:
                nxt.append(value)
        current = nxt
    return current


def _token(value: Any, wanted: SearchValue) -> bool:
    codings: list[Any]
    if isinstance(value, dict) and "coding" in value:
        found = value.get("coding")
        codings = found if isinstance(found, list) else []
    elif isinstance(value, dict):
        codings = [value]  # a Coding or an Identifier
    else:
        codings = [{"code": str(value).lower() if isinstance(value, bool) else str(value)}]
    for coding in codings:
        if not isinstance(coding, dict):
            continue  # not a Coding: a body that FHIR validation refuses anyway
        code = coding.get("code", coding.get("value"))
        if code is None or str(code) != wanted.value:
            continue
        if wanted.system is None:
            return True
        if wanted.system == "" and not coding.get("system"):
            return True
        if coding.get("system") == wanted.system:
            return True
    return False


def _bounds(text: str) -> tuple[datetime, datetime]:
    """The instant range a FHIR date/dateTime value stands for.

    Each range ends on its last second, found inside the period (never as the
    start of the next one minus a second: there is no day after 9999-12-31)."""
    text = text.strip()
    if len(text) == 4:
        y = int(text)
        return datetime(y, 1, 1), datetime(y, 12, 31, *_LAST_SECOND)
    if len(text) == 7:
        y, m = int(text[:4]), int(text[5:7])
        if not 1 <= m <= 12:
            raise ValueError("not a month")
        return datetime(y, m, 1), datetime(y, m, monthrange(y, m)[1], *_LAST_SECOND)
    if len(text) == 10:
        day = date.fromisoformat(text)
        return datetime(day.year, day.month, day.day), datetime(
            day.year, day.month, day.day, *_LAST_SECOND
        )
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment, moment


def _date(value: Any, wanted: SearchValue) -> bool:
    if isinstance(value, dict):  # a Period
        start = value.get("start")
        end = value.get("end") or start
        if start is None:
            return False
        low, high = _bounds(str(start))[0], _bounds(str(end))[1]
    else:
        low, high = _bounds(str(value))
    w_low, w_high = _bounds(wanted.value)
    if (low.tzinfo is None) != (w_low.tzinfo is None):
        # A day asked about (no zone) is a day of the resource's own wall clock,
        # which is what people mean; two instants compare as instants.
        low, high = low.replace(tzinfo=None), high.replace(tzinfo=None)
        w_low, w_high = w_low.replace(tzinfo=None), w_high.replace(tzinfo=None)
    prefix = wanted.prefix or "eq"
    if prefix == "eq":
        return low >= w_low and high <= w_high
    if prefix == "ne":
        return not (low >= w_low and high <= w_high)
    if prefix in ("gt", "sa"):
        return high > w_high
    if prefix == "ge":
        return high >= w_low
    if prefix in ("lt", "eb"):
        return low < w_low
    if prefix == "le":
        return low <= w_high
    return low <= w_high and high >= w_low  # ap: overlaps


def _string(value: Any, wanted: SearchValue) -> bool:
    texts: list[str] = []
    if isinstance(value, dict):
        for v in value.values():
            texts.extend(v if isinstance(v, list) else [v])
    else:
        texts.append(value)
    needle = wanted.value.casefold()
    return any(isinstance(t, str) and t.casefold().startswith(needle) for t in texts)


def _reference(value: Any, wanted: SearchValue) -> bool:
    ref = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(ref, str):
        return False
    return ref == wanted.value or ref.rsplit("/", 1)[-1] == wanted.value.rsplit("/", 1)[-1]


def _number(value: Any, wanted: SearchValue) -> bool:
    number = value.get("value") if isinstance(value, dict) else value
    try:
        have, want = float(str(number)), float(wanted.value)
    except (TypeError, ValueError):
        return False
    prefix = wanted.prefix or "eq"
    return {
        "eq": have == want,
        "ne": have != want,
        "gt": have > want,
        "ge": have >= want,
        "lt": have < want,
        "le": have <= want,
    }.get(prefix, False)


_TESTS = {
    "token": _token,
    "date": _date,
    "string": _string,
    "reference": _reference,
    "number": _number,
}


def matches(resource: dict[str, Any], path: Sequence[str], kind: str, wanted: SearchValue) -> bool:
    """Whether any value at `path` in `resource` satisfies the search value."""
    test = _TESTS[kind]
    for value in _values(resource, path):
        try:
            if test(value, wanted):
                return True
        except (ValueError, OverflowError):
            continue  # a value the test cannot read matches nothing
    return False
