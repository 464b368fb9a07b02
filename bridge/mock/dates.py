"""Date helpers shared by the data generators: parsing, formats, lifetimes.

Each legacy system writes dates its own way (the EHR MM/DD/YYYY, the lab
ISO 8601 without offset, billing yyyyMMdd); the generators work on
``datetime.date`` and format at the edge, with these helpers.
"""

from __future__ import annotations

import datetime as _dt
import random
from typing import NamedTuple

from bridge.mock.data import PatientRecord

__all__ = [
    "Life",
    "between",
    "lifetimes",
    "mmddyyyy",
    "parse_mmddyyyy",
    "yyyymmdd",
]


def mmddyyyy(day: _dt.date) -> str:
    return f"{day.month:02d}/{day.day:02d}/{day.year:04d}"


def yyyymmdd(day: _dt.date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def parse_mmddyyyy(text: str) -> _dt.date:
    month, day, year = text.split("/")
    return _dt.date(int(year), int(month), int(day))


def between(rng: random.Random, first: _dt.date, last: _dt.date) -> _dt.date:
    """A day in ``[first, last]``; ``first`` if the range is empty."""
    span = (last - first).days
    # random() rather than randint(): several times faster, and this runs
    # a hundred thousand times per hospital.
    return first if span <= 0 else first + _dt.timedelta(days=int(rng.random() * (span + 1)))


class Life(NamedTuple):
    """The span in which a patient can have clinical events, as the data sees it."""

    record: PatientRecord
    dob: _dt.date
    last_day: _dt.date  # today for the living, the date of death otherwise
    today: _dt.date

    @property
    def mrn(self) -> str:
        return self.record.mrn

    def age(self, on: _dt.date | None = None) -> int:
        day = on or self.last_day
        years = day.year - self.dob.year
        if (day.month, day.day) < (self.dob.month, self.dob.day):
            years -= 1
        return max(years, 0)

    def window(self, years: float) -> tuple[_dt.date, _dt.date] | None:
        """The patient's days among the last ``years`` before today, or ``None``."""
        first = max(self.dob, self.today - _dt.timedelta(days=round(365.25 * years)))
        return None if first > self.last_day else (first, self.last_day)


def lifetimes(records: list[PatientRecord], today: _dt.date) -> list[Life]:
    """Each patient's span; a death without a date ends two years before today."""
    lives = []
    for record in records:
        dob = parse_mmddyyyy(record.dob)
        last = today
        if record.deceased_flag == "Y":
            if record.deceased_date is not None:
                last = min(today, parse_mmddyyyy(record.deceased_date))
            else:
                last = today - _dt.timedelta(days=730)
        lives.append(Life(record, dob, max(last, dob), today))
    return lives
