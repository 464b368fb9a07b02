"""The scheduling system's seeded calendar: clinic slots and appointments.

Slots cover the 60 days after the reference date ("today"), weekdays
08:00-17:00 in each provider's block length (20 or 30 minutes); about 30%
are already booked (fewer in a hospital too small to fill them: nobody
has more than five future appointments). Past appointments (the last two years) are COMPLETED
or CANCELLED. Times are local to the hospital, ``yyyy-MM-ddTHH:mm``.
"""

from __future__ import annotations

import datetime as _dt
import random
from dataclasses import dataclass
from typing import NamedTuple

from bridge.mock.dates import Life, between
from bridge.mock.providers import Provider

__all__ = [
    "HORIZON_DAYS",
    "Appointment",
    "ScheduleData",
    "Slot",
    "generate_schedule",
]

HORIZON_DAYS = 60
_OPEN, _CLOSE = 8 * 60, 17 * 60  # clinic hours, minutes after midnight
_BOOKED_SHARE = 0.30
_MAX_FUTURE = 5  # future appointments per patient, at most

REASONS = (
    "Annual physical", "Follow-up visit", "Blood pressure check", "Diabetes follow-up",
    "Medication review", "Sore throat", "Cough", "Back pain", "Rash", "Lab review",
    "Well child visit", "Flu shot", "Knee pain", "Headache", "Pre-operative evaluation",
)  # fmt: skip


class Slot(NamedTuple):
    SlotId: str
    ProviderId: str
    Start: str
    End: str
    DurationMinutes: int


class Appointment(NamedTuple):
    ConfirmationNumber: str
    SlotId: str
    ProviderId: str
    Start: str
    End: str
    Reason: str
    Status: str
    MRN: str  # not in the SOAP Appointment; the side door shows it


@dataclass(frozen=True, slots=True)
class ScheduleData:
    slots: dict[str, Slot]  # future slots by id, in (provider, start) order
    slots_by_provider: dict[str, tuple[Slot, ...]]
    appointments: dict[str, Appointment]  # by confirmation number
    by_mrn: dict[str, tuple[str, ...]]  # confirmation numbers, oldest first
    booked: dict[str, str]  # slot id -> confirmation number of the booking
    next_confirmation: int


_CLOCK = {m: f"T{m // 60:02d}:{m % 60:02d}" for m in range(0, 24 * 60)}


def _stamp(day: _dt.date, minutes: int) -> str:
    return day.isoformat() + _CLOCK[minutes]


def generate_schedule(
    rng: random.Random,
    lives: list[Life],
    providers: tuple[Provider, ...],
    primary: dict[str, Provider],
    today: _dt.date,
) -> ScheduleData:
    active = [p for p in providers if p.active]
    living = [life.mrn for life in lives if life.last_day >= today]

    # -- past appointments ------------------------------------------------
    past: list[tuple[str, int, Provider, str, str, str]] = []
    for life in lives:
        window = life.window(2)
        if window is None:
            continue
        first, last = window
        last = min(last, today - _dt.timedelta(days=1))
        for _ in range(rng.choices((0, 1, 2, 3, 4), weights=(15, 30, 28, 17, 10))[0]):
            day = between(rng, first, last)
            while day.weekday() >= 5:
                day -= _dt.timedelta(days=1)
            if day < first:
                continue
            provider = primary[life.mrn] if rng.random() < 0.7 else rng.choice(active)
            step = provider.slot_minutes
            start = _OPEN + step * rng.randrange((_CLOSE - _OPEN) // step)
            status = "COMPLETED" if rng.random() < 0.85 else "CANCELLED"
            past.append((day.isoformat(), start, provider, life.mrn, rng.choice(REASONS), status))
    past.sort(key=lambda p: (p[0], p[1], p[2].provider_id, p[3]))

    appointments: dict[str, Appointment] = {}
    by_mrn: dict[str, list[str]] = {}
    number = 0

    def book(
        slot_id: str, pid: str, start: str, end: str, reason: str, status: str, mrn: str
    ) -> str:
        nonlocal number
        number += 1
        confirmation = f"CN{number:07d}"
        appointments[confirmation] = Appointment(
            confirmation, slot_id, pid, start, end, reason, status, mrn
        )
        by_mrn.setdefault(mrn, []).append(confirmation)
        return confirmation

    for i, (iso, start, provider, mrn, reason, status) in enumerate(past, start=1):
        day = _dt.date.fromisoformat(iso)
        book(
            f"S{i:07d}",
            provider.provider_id,
            _stamp(day, start),
            _stamp(day, start + provider.slot_minutes),
            reason,
            status,
            mrn,
        )

    # -- future slots -----------------------------------------------------
    days = [today + _dt.timedelta(days=n) for n in range(1, HORIZON_DAYS + 1)]
    weekdays = [d for d in days if d.weekday() < 5]
    slots: dict[str, Slot] = {}
    by_provider: dict[str, tuple[Slot, ...]] = {}
    booked: dict[str, str] = {}
    future: dict[str, int] = {}  # bookings per patient
    serial = 2_000_000
    for provider in active:
        step = provider.slot_minutes
        own = []
        pid = provider.provider_id
        for day in weekdays:
            iso = day.isoformat()
            for start in range(_OPEN, _CLOSE, step):
                serial += 1
                slot = Slot(
                    f"S{serial:07d}", pid, iso + _CLOCK[start], iso + _CLOCK[start + step], step
                )
                own.append(slot)
                slots[slot.SlotId] = slot
                if living and rng.random() < _BOOKED_SHARE:
                    mrn = rng.choice(living)
                    # A small hospital would otherwise give each patient
                    # hundreds of bookings; the slot stays free instead.
                    if future.get(mrn, 0) >= _MAX_FUTURE:
                        continue
                    future[mrn] = future.get(mrn, 0) + 1
                    booked[slot.SlotId] = book(
                        slot.SlotId,
                        provider.provider_id,
                        slot.Start,
                        slot.End,
                        rng.choice(REASONS),
                        "BOOKED",
                        mrn,
                    )
        by_provider[provider.provider_id] = tuple(own)
    for provider in providers:
        by_provider.setdefault(provider.provider_id, ())

    ordered = {
        mrn: tuple(sorted(numbers, key=lambda c: (appointments[c].Start, c)))
        for mrn, numbers in by_mrn.items()
    }
    return ScheduleData(
        slots=slots,
        slots_by_provider=by_provider,
        appointments=appointments,
        by_mrn=ordered,
        booked=booked,
        next_confirmation=number + 1,
    )
