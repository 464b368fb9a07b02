"""The scheduling vendor's state: WS-Security checks, slots and bookings.

There are no sessions: every call proves itself with a UsernameToken.
The seeded calendar is immutable; bookings and cancellations made through
SOAP live in an overlay that ``reset`` throws away.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from collections.abc import Sequence
from typing import Any

from lxml import etree

from bridge.mock.options import MockOptions
from bridge.mock.providers import Provider
from bridge.mock.scheddata import Appointment, Slot
from bridge.mock.state import Clock, SystemState, VendorError
from bridge.mock.world import World, build_world
from bridge.mock.wssec import NonceCache, read_token, verify

__all__ = ["SchedulingState"]

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class SchedulingState(SystemState):
    """Providers, slots and appointments of the mock scheduling system."""

    writes = frozenset({"BookAppointment", "CancelAppointment"})

    def __init__(
        self,
        options: MockOptions,
        world: World | None = None,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        super().__init__(
            "scheduling", internal_code="SCHED-INTERNAL", seed=options.seed, clock=clock
        )
        self.options = options
        self.world = world or build_world(options.seed, options.patients, options.reference_date())
        self._wall = wall_clock
        self._mrns = {p.mrn for p in self.world.patients}
        self._providers = {p.provider_id: p for p in self.world.providers}
        self._nonces = NonceCache()
        self._clear_writes()

    def _clear_writes(self) -> None:
        base = self.world.schedule
        self._booked: dict[str, str] = dict(base.booked)  # slot id -> confirmation
        self._new: dict[str, Appointment] = {}
        self._new_by_mrn: dict[str, list[str]] = {}
        self._status: dict[str, str] = {}  # confirmation -> status changed by a call
        self._next = base.next_confirmation

    # -- security -------------------------------------------------------------

    def authenticate(self, header_elements: Sequence[etree._Element] | None) -> None:
        """Check the request's UsernameToken; SCHED-AUTH or SCHED-REPLAY if wrong."""
        token = read_token(header_elements)
        with self._lock:
            verify(
                token,
                username=self.options.username,
                password=self.options.password,
                now=self._wall(),
                nonces=self._nonces,
            )

    # -- queries ----------------------------------------------------------------

    def providers(self) -> tuple[Provider, ...]:
        return self.world.providers

    def open_slots(
        self, provider_id: str | None, from_date: str | None, to_date: str | None
    ) -> list[Slot]:
        provider = self._provider(provider_id)
        first = _iso_date(from_date, "FromDate")
        last = _iso_date(to_date, "ToDate")
        if first > last:
            raise VendorError("SCHED-BAD-REQUEST", f"FromDate {first} is after ToDate {last}")
        low, high = first.isoformat(), last.isoformat()
        slots = self.world.schedule.slots_by_provider.get(provider.provider_id, ())
        with self._lock:
            booked = set(self._booked)
        return [s for s in slots if low <= s.Start[:10] <= high and s.SlotId not in booked]

    def appointments(self, mrn: str | None) -> list[Appointment]:
        mrn = self._mrn(mrn, "SCHED-PAT-404")
        base = self.world.schedule
        with self._lock:
            numbers = [*base.by_mrn.get(mrn, ()), *self._new_by_mrn.get(mrn, ())]
            found = [self._appointment(n) for n in numbers]
        appointments = [a for a in found if a is not None]
        appointments.sort(key=lambda a: (a.Start, a.ConfirmationNumber))
        return appointments

    # -- writes -----------------------------------------------------------------

    def book(self, slot_id: str | None, mrn: str | None, reason: str | None) -> str:
        slot_id = (slot_id or "").strip()
        slot = self.world.schedule.slots.get(slot_id)
        if slot is None:
            raise VendorError("SLOT-404", f"Slot {slot_id} does not exist")
        mrn = self._mrn(mrn, "SCHED-PAT-404")
        with self._lock:
            if slot_id in self._booked:
                raise VendorError("SLOT-TAKEN", f"Slot {slot_id} is already booked")
            confirmation = f"CN{self._next:07d}"
            self._next += 1
            self._new[confirmation] = Appointment(
                confirmation,
                slot.SlotId,
                slot.ProviderId,
                slot.Start,
                slot.End,
                (reason or "").strip(),
                "BOOKED",
                mrn,
            )
            self._new_by_mrn.setdefault(mrn, []).append(confirmation)
            self._booked[slot_id] = confirmation
            return confirmation

    def cancel(self, confirmation: str | None) -> None:
        confirmation = (confirmation or "").strip()
        with self._lock:
            appointment = self._appointment(confirmation)
            if appointment is None:
                raise VendorError("APPT-404", f"Appointment {confirmation} does not exist")
            if appointment.Status != "BOOKED":
                raise VendorError(
                    "APPT-STATE",
                    f"Appointment {confirmation} is {appointment.Status} and cannot be cancelled",
                )
            self._status[confirmation] = "CANCELLED"
            if self._booked.get(appointment.SlotId) == confirmation:
                del self._booked[appointment.SlotId]

    # -- side-door views ----------------------------------------------------

    def slot_view(
        self, provider_id: str | None, status: str | None, first: str | None, last: str | None
    ) -> list[dict[str, Any]]:
        """Future slots with ``Status`` FREE/BOOKED (and who booked them)."""
        schedule = self.world.schedule
        if provider_id:
            slots: Sequence[Slot] = schedule.slots_by_provider.get(provider_id, ())
        else:
            slots = list(schedule.slots.values())
        with self._lock:
            booked = dict(self._booked)
        out = []
        for slot in slots:
            day = slot.Start[:10]
            if (first and day < first) or (last and day > last):
                continue
            confirmation = booked.get(slot.SlotId)
            state = "BOOKED" if confirmation else "FREE"
            if status and state != status:
                continue
            view: dict[str, Any] = {**slot._asdict(), "Status": state}
            if confirmation:
                view["ConfirmationNumber"] = confirmation
            out.append(view)
        return out

    def appointment(self, confirmation: str) -> Appointment | None:
        with self._lock:
            return self._appointment(confirmation)

    # -- helpers ----------------------------------------------------------------

    def _appointment(self, confirmation: str) -> Appointment | None:
        """Lock held: an appointment with any status change applied."""
        appointment = self._new.get(confirmation) or self.world.schedule.appointments.get(
            confirmation
        )
        if appointment is None:
            return None
        status = self._status.get(confirmation)
        return appointment if status is None else appointment._replace(Status=status)

    def _provider(self, provider_id: str | None) -> Provider:
        provider_id = (provider_id or "").strip()
        provider = self._providers.get(provider_id)
        if provider is None:
            raise VendorError("SCHED-PROV-404", f"Provider {provider_id} does not exist")
        return provider

    def _mrn(self, mrn: str | None, code: str) -> str:
        mrn = (mrn or "").strip()
        if mrn not in self._mrns:
            raise VendorError(code, f"Patient {mrn} not found")
        return mrn

    # -- stats and reset ------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._clear_writes()
            self._nonces.clear()
        super().reset()


def _iso_date(text: str | None, name: str) -> _dt.date:
    text = (text or "").strip()
    if _ISO_DATE.match(text):
        try:
            return _dt.date.fromisoformat(text)
        except ValueError:
            pass
    raise VendorError("SCHED-BAD-REQUEST", f"{name} '{text}' is not a date (yyyy-MM-dd)")
