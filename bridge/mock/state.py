"""Everything the mock hospital remembers: sessions, cursors, stats, faults.

The SOAP services run in a thread pool (a2wsgi) while the side door runs on
the event loop, so every piece of mutable state sits behind one lock per
legacy system. Critical sections are short dictionary updates; nothing
sleeps or does I/O while holding a lock.

Errors a legacy system would answer with a fault are raised as
:class:`VendorError`, free of any SOAP library, so this module can be unit
tested in-process and each protocol module decides how to render them.

Session expiry is lazy, the way the contract describes it: an idle session
is only noticed when someone uses it or counts live sessions.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import random
import re
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.mock.data import PatientRecord, generate, search_key

__all__ = [
    "EhrData",
    "EhrOptions",
    "EhrState",
    "FaultSettings",
    "HospitalState",
    "Page",
    "SearchCriteria",
    "SystemState",
    "VendorError",
]

Clock = Callable[[], float]

# Forgotten ids are kept only so a late caller hears "expired" rather than
# "invalid"; a bound keeps a long-running mock from growing without limit.
_EXPIRED_MEMORY = 10_000

_DOB_RE = re.compile(r"^(\d{2})/(\d{2})/(\d{4})$")


class VendorError(Exception):
    """A fault the legacy system sends: vendor ``code`` plus a human message.

    ``server`` picks the SOAP faultcode: ``False`` blames the caller
    (``Client``), ``True`` blames the system itself (``Server``).
    """

    def __init__(self, code: str, message: str, *, server: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.server = server


@dataclass(frozen=True, slots=True)
class EhrOptions:
    """The knobs of the mock EHR, one per ``bridge mock`` option."""

    patients: int = 5000
    seed: int = 42
    session_idle_timeout: float = 300.0
    max_sessions: int = 10
    page_size: int = 25
    username: str = "bridge"
    password: str = "bridge-dev-password"  # noqa: S105 - a documented mock default

    def __post_init__(self) -> None:
        problems = []
        if self.patients < 0:
            problems.append(f"patients must be >= 0, got {self.patients}")
        if self.session_idle_timeout <= 0:
            problems.append(
                f"session_idle_timeout must be > 0 seconds, got {self.session_idle_timeout}"
            )
        if self.max_sessions < 1:
            problems.append(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.page_size < 1:
            problems.append(f"page_size must be >= 1, got {self.page_size}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """What is currently injected into one system (see ``POST /_mock/faults``)."""

    latency_ms: float = 0.0
    fault_rate: float = 0.0
    refuse_until: float | None = None

    def to_json(self, now: float) -> dict[str, float]:
        remaining = 0.0
        if self.refuse_until is not None:
            remaining = max(0.0, round(self.refuse_until - now, 3))
        return {
            "latency_ms": self.latency_ms,
            "fault_rate": self.fault_rate,
            "refuse_seconds": remaining,
        }


class SystemState:
    """Stats and fault injection shared by every mock legacy system.

    A new system (lab, scheduling, ...) subclasses this, adds its own data
    and sessions, and overrides :meth:`reset`, :meth:`expire_sessions` and
    :meth:`stats` to include them.
    """

    def __init__(self, name: str, *, internal_code: str, seed: int, clock: Clock) -> None:
        self.name = name
        self.internal_code = internal_code
        self._seed = seed
        self._clock = clock
        self._lock = threading.RLock()
        self._calls: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._refused = 0
        self._settings = FaultSettings()
        self._fault_rng = random.Random(seed)

    # -- calls and faults -------------------------------------------------

    def begin_call(self, operation: str, *, injectable: bool = True) -> None:
        """Count one SOAP operation and maybe fail it on purpose.

        Injected faults use a seeded RNG, re-seeded whenever faults are set,
        so a given fault_rate fails the same calls on every run.
        """
        with self._lock:
            self._calls[operation] += 1
            rate = self._settings.fault_rate
            fail = injectable and rate > 0 and self._fault_rng.random() < rate
        if fail:
            raise VendorError(
                self.internal_code,
                f"Internal error processing {operation}; please retry later",
                server=True,
            )

    def record_fault(self, code: str) -> None:
        with self._lock:
            self._faults[code] += 1

    def record_refused(self) -> None:
        with self._lock:
            self._refused += 1

    def latency_seconds(self) -> float:
        with self._lock:
            return self._settings.latency_ms / 1000.0

    def refusing(self) -> bool:
        with self._lock:
            until = self._settings.refuse_until
        return until is not None and self._clock() < until

    # -- fault settings ---------------------------------------------------

    def set_faults(
        self,
        *,
        latency_ms: float | None = None,
        fault_rate: float | None = None,
        refuse_seconds: float | None = None,
    ) -> None:
        """Change the given settings, leave the others as they are."""
        with self._lock:
            current = self._settings
            if latency_ms is not None:
                current = dataclasses.replace(current, latency_ms=latency_ms)
            if fault_rate is not None:
                current = dataclasses.replace(current, fault_rate=fault_rate)
                self._fault_rng = random.Random(self._seed)
            if refuse_seconds is not None:
                until = self._clock() + refuse_seconds if refuse_seconds > 0 else None
                current = dataclasses.replace(current, refuse_until=until)
            self._settings = current

    def clear_faults(self) -> None:
        with self._lock:
            self._settings = FaultSettings()
            self._fault_rng = random.Random(self._seed)

    def faults(self) -> dict[str, float]:
        with self._lock:
            return self._settings.to_json(self._clock())

    # -- hooks for subclasses ---------------------------------------------

    def expire_sessions(self) -> int:
        """Expire every live session now; returns how many there were."""
        return 0

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._faults.clear()
            self._refused = 0
        self.clear_faults()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(sorted(self._calls.items())),
                "faults": dict(sorted(self._faults.items())),
                "refused": self._refused,
            }


# -- the EHR ----------------------------------------------------------------


class EhrData:
    """The EHR's patients, indexed once; immutable for now.

    Kept inside the state (not a module global) so that when write
    operations arrive, ``reset`` can rebuild it from the seed.
    """

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


@dataclass(slots=True)
class _Session:
    username: str
    last_used: float
    cursors: dict[str, _Cursor] = field(default_factory=dict)


class EhrState(SystemState):
    """Sessions, cursors and patients of the mock EHR.

    >>> ehr = EhrState(EhrOptions(patients=50))
    >>> sid = ehr.login("bridge", "bridge-dev-password")
    >>> ehr.get_patient(sid, "100001").mrn
    '100001'
    """

    def __init__(self, options: EhrOptions, *, clock: Clock = time.monotonic) -> None:
        super().__init__("ehr", internal_code="EHR-INTERNAL", seed=options.seed, clock=clock)
        self.options = options
        self.data = EhrData(generate(options.seed, options.patients))
        self._sessions: dict[str, _Session] = {}
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._logins = 0
        self._login_failures = 0
        self._logouts = 0
        self._peak = 0

    # -- sessions -----------------------------------------------------------

    def login(self, username: str | None, password: str | None) -> str:
        opts = self.options
        with self._lock:
            # Compare both, always, so a wrong username costs the same as a
            # wrong password, as a real system would try to ensure.
            user_ok = secrets.compare_digest((username or "").encode(), opts.username.encode())
            pass_ok = secrets.compare_digest((password or "").encode(), opts.password.encode())
            if not (user_ok and pass_ok):
                self._login_failures += 1
                raise VendorError("EHR-AUTH-FAILED", "Invalid username or password")
            now = self._clock()
            self._sweep(now)
            live = sum(1 for s in self._sessions.values() if s.username == username)
            if live >= opts.max_sessions:
                self._login_failures += 1
                raise VendorError(
                    "EHR-SESSION-LIMIT",
                    f"User {username} already has {live} active sessions "
                    f"(maximum {opts.max_sessions})",
                )
            session_id = secrets.token_hex(16)
            self._sessions[session_id] = _Session(username=opts.username, last_used=now)
            self._logins += 1
            self._peak = max(self._peak, len(self._sessions))
            return session_id

    def logout(self, session_id: str | None) -> None:
        """End a session; unknown or already expired ids are a silent no-op."""
        with self._lock:
            session = self._sessions.pop(session_id or "", None)
            if session is None:
                return
            if self._is_idle(session, self._clock()):
                self._forget(session_id or "")
            else:
                self._logouts += 1

    def expire_sessions(self) -> int:
        with self._lock:
            ids = list(self._sessions)
            for session_id in ids:
                del self._sessions[session_id]
                self._forget(session_id)
            return len(ids)

    def active_sessions(self) -> int:
        with self._lock:
            self._sweep(self._clock())
            return len(self._sessions)

    def _use(self, session_id: str | None) -> _Session:
        """The live session for an id, touched; the lock must be held."""
        if not session_id:
            raise VendorError("EHR-SESSION-INVALID", "Missing SessionHeader/SessionId")
        now = self._clock()
        session = self._sessions.get(session_id)
        if session is not None and self._is_idle(session, now):
            del self._sessions[session_id]
            self._forget(session_id)
            session = None
        if session is None:
            if session_id in self._expired:
                raise VendorError("EHR-SESSION-EXPIRED", "Session has expired; please log in")
            raise VendorError("EHR-SESSION-INVALID", "Unknown session id")
        session.last_used = now
        return session

    def _is_idle(self, session: _Session, now: float) -> bool:
        return now - session.last_used >= self.options.session_idle_timeout

    def _sweep(self, now: float) -> None:
        for session_id, session in list(self._sessions.items()):
            if self._is_idle(session, now):
                del self._sessions[session_id]
                self._forget(session_id)

    def _forget(self, session_id: str) -> None:
        self._expired[session_id] = None
        while len(self._expired) > _EXPIRED_MEMORY:
            self._expired.popitem(last=False)

    # -- patients -----------------------------------------------------------

    def get_patient(self, session_id: str | None, mrn: str | None) -> PatientRecord:
        with self._lock:
            self._use(session_id)
        mrn = (mrn or "").strip()
        if not mrn:
            raise VendorError("EHR-BAD-REQUEST", "MRN is required")
        record = self.data.by_mrn.get(mrn)
        if record is None:
            raise VendorError("EHR-PAT-404", f"Patient {mrn} not found")
        return record

    def find_patients(self, session_id: str | None, criteria: SearchCriteria) -> Page:
        with self._lock:
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
            session = self._use(session_id)
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
            _check_dob(dob)
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

    # -- stats and reset ------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._expired.clear()
            self._logins = self._login_failures = self._logouts = self._peak = 0
        super().reset()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._sweep(self._clock())
            ours: dict[str, Any] = {
                "logins": self._logins,
                "login_failures": self._login_failures,
                "logouts": self._logouts,
                "active_sessions": len(self._sessions),
                "peak_sessions": self._peak,
            }
            ours.update(super().stats())
            return ours


def _check_dob(dob: str) -> None:
    match = _DOB_RE.match(dob)
    valid = False
    if match is not None:
        month, day, year = (int(g) for g in match.groups())
        try:
            _dt.date(year, month, day)
            valid = True
        except ValueError:
            valid = False
    if not valid:
        raise VendorError("EHR-BAD-REQUEST", f"Invalid DOB '{dob}'; expected MM/DD/YYYY")


# -- the whole hospital -------------------------------------------------------


class HospitalState:
    """Every mock system by name; what the side door talks to."""

    def __init__(self, systems: Sequence[SystemState]) -> None:
        self.systems: dict[str, SystemState] = {s.name: s for s in systems}

    def system(self, name: str) -> SystemState:
        return self.systems[name]

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: system.stats() for name, system in self.systems.items()}

    def reset(self) -> None:
        for system in self.systems.values():
            system.reset()

    def faults(self) -> dict[str, dict[str, float]]:
        return {name: system.faults() for name, system in self.systems.items()}

    def clear_faults(self) -> None:
        for system in self.systems.values():
            system.clear_faults()
