"""The mock EHR's state: sessions, cursors, the selected patient, the chart.

Patients and their charts come from the shared seeded :class:`World`;
the only things the EHR writes are vitals (``RecordVitals``), kept apart
so ``reset`` drops them without regenerating anything.
"""

from __future__ import annotations

import datetime as _dt
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.mock.clinical import VITAL_UNITS, Allergy, Medication, Problem, VitalReading
from bridge.mock.data import PatientRecord, search_key
from bridge.mock.options import MockOptions
from bridge.mock.sessions import Session, SessionRules, SessionTable
from bridge.mock.state import Clock, SystemState, VendorError
from bridge.mock.world import World, build_world

__all__ = [
    "EHR_SESSIONS",
    "EhrData",
    "EhrState",
    "Page",
    "ReadingInput",
    "SearchCriteria",
]

EHR_SESSIONS = SessionRules(
    auth_code="EHR-AUTH-FAILED",
    limit_code="EHR-SESSION-LIMIT",
    invalid_code="EHR-SESSION-INVALID",
    expired_code="EHR-SESSION-EXPIRED",
    missing_message="Missing SessionHeader/SessionId",
)

_DOB_RE = re.compile(r"^(\d{2})/(\d{2})/(\d{4})$")
_TAKEN_RE = re.compile(r"^(\d{2})/(\d{2})/(\d{4}) (\d{2}):(\d{2}):(\d{2})$")


class EhrData:
    """The EHR's patients, indexed once for searches."""

    def __init__(self, records: Sequence[PatientRecord]) -> None:
        self.records = tuple(records)
        self.by_mrn = {r.mrn: r for r in self.records}
        keyed = sorted(
            ((search_key(r.last_name), search_key(r.first_name), r.mrn), r) for r in self.records
        )
        # (folded last, folded first, record) in the order searches return.
        self.ordered = tuple((k[0], k[1], r) for k, r in keyed)


@dataclass(frozen=True, slots=True)
class SearchCriteria:
    last_name: str | None = None
    first_name: str | None = None
    dob: str | None = None
    sex: str | None = None
    mrn: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    records: tuple[PatientRecord, ...]
    cursor_id: str | None
    total: int


@dataclass(slots=True)
class _Cursor:
    results: tuple[PatientRecord, ...]
    position: int


@dataclass(frozen=True, slots=True)
class ReadingInput:
    """One ``Reading`` of a ``RecordVitals`` request, as received."""

    type_code: str | None
    value: Decimal | None
    unit: str | None
    taken_at: str | None
    device_id: str | None = None


@dataclass(slots=True)
class _Written:
    """Readings stored by ``RecordVitals`` since the last reset."""

    by_mrn: dict[str, list[VitalReading]] = field(default_factory=dict)
    next_id: int = 0


class EhrState(SystemState):
    """Sessions, cursors, patient context and charts of the mock EHR.

    >>> ehr = EhrState(MockOptions(patients=50, today=_dt.date(2026, 11, 24)))
    >>> sid = ehr.login("bridge", "bridge-dev-password")
    >>> ehr.get_patient(sid, "100001").mrn
    '100001'
    """

    writes = frozenset({"RecordVitals"})

    def __init__(
        self, options: MockOptions, world: World | None = None, *, clock: Clock = time.monotonic
    ) -> None:
        super().__init__("ehr", internal_code="EHR-INTERNAL", seed=options.seed, clock=clock)
        self.options = options
        self.world = world or build_world(options.seed, options.patients, options.reference_date())
        self.data = EhrData(self.world.patients)
        self._sessions = SessionTable(
            EHR_SESSIONS,
            username=options.username,
            password=options.password,
            max_sessions=options.max_sessions,
            idle_timeout=options.session_idle_timeout,
            clock=clock,
        )
        self._written = _Written(next_id=self.world.clinical.next_reading_id)

    # -- sessions -----------------------------------------------------------

    def login(self, username: str | None, password: str | None) -> str:
        with self._lock:
            return self._sessions.login(username, password)

    def logout(self, session_id: str | None) -> None:
        """End a session; unknown or already expired ids are a silent no-op."""
        with self._lock:
            self._sessions.logout(session_id)

    def expire_sessions(self) -> int:
        with self._lock:
            return self._sessions.expire_all()

    def active_sessions(self) -> int:
        with self._lock:
            return self._sessions.active()

    def _use(self, session_id: str | None) -> Session:
        with self._lock:
            return self._sessions.use(session_id)

    # -- patients -----------------------------------------------------------

    def _patient(self, mrn: str | None) -> PatientRecord:
        mrn = (mrn or "").strip()
        if not mrn:
            raise VendorError("EHR-BAD-REQUEST", "MRN is required")
        record = self.data.by_mrn.get(mrn)
        if record is None:
            raise VendorError("EHR-PAT-404", f"Patient {mrn} not found")
        return record

    def get_patient(self, session_id: str | None, mrn: str | None) -> PatientRecord:
        self._use(session_id)
        return self._patient(mrn)

    def find_patients(self, session_id: str | None, criteria: SearchCriteria) -> Page:
        session = self._use(session_id)
        # Match outside the lock: it reads only immutable data.
        results = tuple(self._match(criteria))
        size = self.options.page_size
        if len(results) <= size:
            return Page(records=results, cursor_id=None, total=len(results))
        cursor_id = secrets.token_hex(16)
        with self._lock:
            session.cursors[cursor_id] = _Cursor(results=results, position=size)
        return Page(records=results[:size], cursor_id=cursor_id, total=len(results))

    def fetch_next(self, session_id: str | None, cursor_id: str | None) -> Page:
        with self._lock:
            session = self._sessions.use(session_id)
            cursor = session.cursors.get(cursor_id or "")
            if cursor is None:
                raise VendorError(
                    "EHR-CURSOR-INVALID", f"Cursor {cursor_id} is not valid in this session"
                )
            end = cursor.position + self.options.page_size
            records = cursor.results[cursor.position : end]
            cursor.position = end
            next_id: str | None = cursor_id
            if end >= len(cursor.results):
                del session.cursors[cursor_id or ""]
                next_id = None
            return Page(records=records, cursor_id=next_id, total=len(cursor.results))

    def _match(self, criteria: SearchCriteria) -> list[PatientRecord]:
        last = search_key(criteria.last_name) if criteria.last_name else None
        first = search_key(criteria.first_name) if criteria.first_name else None
        dob = criteria.dob or None
        if dob is not None:
            _check_date(dob, "DOB")
        sex = criteria.sex or None
        mrn = criteria.mrn or None
        candidates: Sequence[tuple[str, str, PatientRecord]] = self.data.ordered
        if mrn is not None:
            record = self.data.by_mrn.get(mrn)
            candidates = []
            if record is not None:
                candidates = [(search_key(record.last_name), search_key(record.first_name), record)]
        return [
            record
            for folded_last, folded_first, record in candidates
            if (last is None or folded_last.startswith(last))
            and (first is None or folded_first.startswith(first))
            and (dob is None or record.dob == dob)
            and (sex is None or record.sex == sex)
        ]

    # -- the selected patient's chart -------------------------------------------

    def select_patient(self, session_id: str | None, mrn: str | None) -> None:
        """Make ``mrn`` the session's patient; a failed select clears the context."""
        with self._lock:
            session = self._sessions.use(session_id)
            session.selected_mrn = None
            session.selected_mrn = self._patient(mrn).mrn

    def _selected(self, session_id: str | None) -> str:
        with self._lock:
            mrn = self._sessions.use(session_id).selected_mrn
        if mrn is None:
            raise VendorError("EHR-NO-PATIENT", "No patient selected; call SelectPatient first")
        return mrn

    def allergies(self, session_id: str | None) -> tuple[Allergy, ...]:
        return self.world.clinical.allergies.get(self._selected(session_id), ())

    def problems(self, session_id: str | None) -> tuple[Problem, ...]:
        return self.world.clinical.problems.get(self._selected(session_id), ())

    def medications(self, session_id: str | None) -> tuple[Medication, ...]:
        return self.world.clinical.medications.get(self._selected(session_id), ())

    # -- vitals -------------------------------------------------------------------

    def record_vitals(
        self, session_id: str | None, mrn: str | None, readings: Sequence[ReadingInput]
    ) -> list[str]:
        """Store a batch of readings, all or nothing; returns their ReadingIds."""
        self._use(session_id)
        patient = self._patient(mrn)
        if not readings:
            raise VendorError("EHR-BAD-REQUEST", "Readings must hold at least one Reading")
        checked = [_check_reading(i, r) for i, r in enumerate(readings, start=1)]
        with self._lock:
            stored = self._written.by_mrn.setdefault(patient.mrn, [])
            ids = []
            for type_code, value, unit, taken_at, device in checked:
                reading_id = f"VS{self._written.next_id:08d}"
                self._written.next_id += 1
                stored.append(VitalReading(reading_id, type_code, value, unit, taken_at, device))
                ids.append(reading_id)
            return ids

    def get_vitals(
        self, session_id: str | None, mrn: str | None, from_date: str | None, to_date: str | None
    ) -> list[VitalReading]:
        self._use(session_id)
        patient = self._patient(mrn)
        low = _date_key(_check_date(from_date, "FromDate")) if from_date else None
        high = _date_key(_check_date(to_date, "ToDate")) if to_date else None
        if low is not None and high is not None and low > high:
            raise VendorError("EHR-BAD-REQUEST", "FromDate is after ToDate")
        return [
            r
            for r in self.vitals(patient.mrn)
            if (low is None or _taken_key(r.TakenAt)[:8] >= low)
            and (high is None or _taken_key(r.TakenAt)[:8] <= high)
        ]

    def vitals(self, mrn: str) -> list[VitalReading]:
        """Every reading of a patient, seeded and written, oldest first."""
        with self._lock:
            written = list(self._written.by_mrn.get(mrn, ()))
        readings = [*self.world.clinical.vitals.get(mrn, ()), *written]
        readings.sort(key=lambda r: (_taken_key(r.TakenAt), r.ReadingId))
        return readings

    # -- stats and reset ------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._sessions.reset()
            self._written = _Written(next_id=self.world.clinical.next_reading_id)
        super().reset()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            ours: dict[str, Any] = self._sessions.stats()
        ours.update(super().stats())
        return ours


def _check_date(text: str, name: str) -> _dt.date:
    match = _DOB_RE.match(text)
    if match is not None:
        month, day, year = (int(g) for g in match.groups())
        try:
            return _dt.date(year, month, day)
        except ValueError:
            pass
    raise VendorError("EHR-BAD-REQUEST", f"Invalid {name} '{text}'; expected MM/DD/YYYY")


def _date_key(day: _dt.date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def _taken_key(taken_at: str) -> str:
    """``MM/DD/YYYY HH:MM:SS`` as a sortable ``YYYYMMDDHH:MM:SS``."""
    return taken_at[6:10] + taken_at[0:2] + taken_at[3:5] + taken_at[11:]


def _check_reading(n: int, reading: ReadingInput) -> tuple[str, str, str, str, str | None]:
    """A reading's stored form, or EHR-BAD-REQUEST naming the reading and the fix."""
    type_code = (reading.type_code or "").strip()
    if type_code not in VITAL_UNITS:
        known = ", ".join(sorted(VITAL_UNITS))
        raise VendorError(
            "EHR-BAD-REQUEST", f"Reading {n}: unknown TypeCode '{type_code}'; expected {known}"
        )
    expected = VITAL_UNITS[type_code]
    if reading.unit != expected:
        raise VendorError(
            "EHR-BAD-REQUEST",
            f"Reading {n}: unit '{reading.unit or ''}' does not fit {type_code}; "
            f"expected '{expected}'",
        )
    value = reading.value
    try:
        valid = value is not None and value.is_finite() and value >= 0
    except InvalidOperation:
        valid = False
    if not valid or value is None:
        raise VendorError("EHR-BAD-REQUEST", f"Reading {n}: Value must be a number >= 0")
    if type_code == "STEPS" and value != value.to_integral_value():
        raise VendorError("EHR-BAD-REQUEST", f"Reading {n}: STEPS must be a whole number")
    taken = (reading.taken_at or "").strip()
    match = _TAKEN_RE.match(taken)
    ok = False
    if match is not None:
        month, day, year, hour, minute, second = (int(g) for g in match.groups())
        try:
            _dt.datetime(year, month, day, hour, minute, second)
            ok = True
        except ValueError:
            ok = False
    if not ok:
        raise VendorError(
            "EHR-BAD-REQUEST",
            f"Reading {n}: TakenAt '{taken}' is not MM/DD/YYYY HH:MM:SS (hospital local time)",
        )
    text = format(value.normalize(), "f") if value != 0 else "0"
    device = (reading.device_id or "").strip() or None
    return type_code, text, expected, taken, device
