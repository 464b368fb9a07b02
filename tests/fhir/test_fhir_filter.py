"""FHIR search semantics on built resources: the calendar's edges included."""

from __future__ import annotations

import pytest

from bridge.fhir.filter import matches
from bridge.fhir.search import SearchValue

TODAY = {"resourceType": "Appointment", "start": "2026-11-24T09:30:00-05:00"}
LAST_DAY = {"resourceType": "Appointment", "start": "9999-12-31T10:00:00-05:00"}
FIRST_DAY = {"resourceType": "Appointment", "start": "0001-01-01T10:00:00Z"}


def _date(text: str) -> SearchValue:
    prefix = text[:2] if text[:2].isalpha() else None
    return SearchValue("date", text[2:] if prefix else text, prefix=prefix)


@pytest.mark.parametrize(
    ("wanted", "today", "last_day", "first_day"),
    [
        # Nothing comes after the calendar's last day but that day itself.
        ("ge9999-12-31", False, True, False),
        ("gt9999-12-31", False, False, False),
        ("le9999-12-31", True, True, True),
        ("9999-12-31", False, True, False),
        ("9999-12", False, True, False),
        ("9999", False, True, False),
        ("lt9999", True, False, True),
        ("le0001-01-01", False, False, True),
        ("0001", False, False, True),
        ("ge0001-01-01", True, True, True),
        ("gt9999-12-31T23:59:59-14:00", False, False, False),
    ],
)
def test_filter_dates_at_the_calendars_ends(
    wanted: str, today: bool, last_day: bool, first_day: bool
) -> None:
    path = ["start"]
    found = [matches(r, path, "date", _date(wanted)) for r in (TODAY, LAST_DAY, FIRST_DAY)]
    assert found == [today, last_day, first_day]


@pytest.mark.parametrize("start", ["9999-12-31", "9999-12", "9999", "0001-01-01"])
def test_filter_resource_dates_at_the_calendars_ends_are_read(start: str) -> None:
    resource = {"resourceType": "Appointment", "start": start}
    assert matches(resource, ["start"], "date", _date(f"eq{start}"))
    assert not matches(resource, ["start"], "date", _date("eq2026-11-24"))


@pytest.mark.parametrize("coding", ["laboratory", ["laboratory"], [None], [1, {"code": "x"}], 7])
def test_filter_a_coding_of_the_wrong_shape_matches_nothing(coding: object) -> None:
    # A body a client wrote, checked against a granular scope before validation.
    resource = {"resourceType": "Observation", "category": [{"coding": coding}]}
    wanted = SearchValue("token", "laboratory")
    assert matches(resource, ["category"], "token", wanted) is False


def test_filter_a_well_formed_coding_still_matches() -> None:
    resource = {"resourceType": "Observation", "category": [{"coding": [{"code": "laboratory"}]}]}
    assert matches(resource, ["category"], "token", SearchValue("token", "laboratory"))
