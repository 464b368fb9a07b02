"""The lab vendor's state: ASP.NET-style cookie sessions over read-only results.

Errors are raised as :class:`VendorError` like everywhere else; the lab's
SOAP module turns them into ``Status=ERR`` inside a normal response, the
way this vendor reports every problem.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from bridge.mock.labdata import LabReport, LabResult
from bridge.mock.options import MockOptions
from bridge.mock.sessions import SessionRules, SessionTable
from bridge.mock.state import Clock, SystemState, VendorError
from bridge.mock.world import World, build_world

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "LAB_SESSIONS",
    "MAX_PAGE_SIZE",
    "LabState",
    "ResultsPage",
    "aspnet_session_id",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# ASP.NET session ids: 24 characters of a-z and 0-5.
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz012345"


def aspnet_session_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


LAB_SESSIONS = SessionRules(
    auth_code="LAB-AUTH",
    limit_code="LAB-SESSION-LIMIT",
    invalid_code="LAB-SESSION",
    expired_code="LAB-SESSION",
    missing_message="Session expired",
    invalid_message="Session expired",
    expired_message="Session expired",
    new_token=aspnet_session_id,
)


@dataclass(frozen=True, slots=True)
class ResultsPage:
    results: list[LabResult]
    page_number: int
    page_size: int  # after the vendor's cap
    total_pages: int
    total_records: int


class LabState(SystemState):
    """Sessions and results of the mock lab.

    >>> lab = LabState(MockOptions(patients=20, today=_dt.date(2026, 11, 24)))
    >>> cookie = lab.logon("bridge", "bridge-dev-password")
    >>> lab.get_results(cookie, "100001", "2020-01-01", "2030-01-01").total_records > 0
    True
    """

    def __init__(
        self, options: MockOptions, world: World | None = None, *, clock: Clock = time.monotonic
    ) -> None:
        super().__init__("lab", internal_code="LAB-INTERNAL", seed=options.seed, clock=clock)
        self.options = options
        self.world = world or build_world(options.seed, options.patients, options.reference_date())
        self._mrns = {p.mrn for p in self.world.patients}
        self._sessions = SessionTable(
            LAB_SESSIONS,
            username=options.username,
            password=options.password,
            max_sessions=options.max_sessions,
            idle_timeout=options.session_idle_timeout,
            clock=clock,
        )

    # -- sessions -----------------------------------------------------------

    def logon(self, username: str | None, password: str | None) -> str:
        """A new ``ASP.NET_SessionId`` value."""
        with self._lock:
            return self._sessions.login(username, password)

    def logoff(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.use(session_id)
            self._sessions.logout(session_id)

    def expire_sessions(self) -> int:
        with self._lock:
            return self._sessions.expire_all()

    def check_session(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.use(session_id)

    # -- results ------------------------------------------------------------

    def get_results(
        self,
        session_id: str | None,
        mrn: str | None,
        from_date: str | None,
        to_date: str | None,
        page_number: int | None = None,
        page_size: int | None = None,
    ) -> ResultsPage:
        self.check_session(session_id)
        mrn = (mrn or "").strip()
        if not mrn:
            raise VendorError("LAB-BAD-REQUEST", "MRN is required")
        low = _iso_date(from_date, "FromDate")
        high = _iso_date(to_date, "ToDate")
        if mrn not in self._mrns:
            raise VendorError("LAB-PAT-404", f"Patient {mrn} not found")
        if low > high:
            raise VendorError("LAB-BAD-RANGE", f"FromDate {low} is after ToDate {high}")
        number = 1 if page_number is None else page_number
        size = DEFAULT_PAGE_SIZE if page_size is None else page_size
        if number < 1 or size < 1:
            raise VendorError("LAB-BAD-REQUEST", "PageNumber and PageSize must be at least 1")
        # A quirk of this vendor: a page size above the maximum is quietly cut.
        size = min(size, MAX_PAGE_SIZE)
        first, last = low.isoformat(), high.isoformat()
        matching = [r for r in self.world.lab.results(mrn) if first <= r.CollectedAt[:10] <= last]
        start = (number - 1) * size
        return ResultsPage(
            results=matching[start : start + size],
            page_number=number,
            page_size=size,
            total_pages=math.ceil(len(matching) / size),
            total_records=len(matching),
        )

    def get_report(self, session_id: str | None, accession: str | None) -> LabReport:
        self.check_session(session_id)
        accession = (accession or "").strip()
        report = self.world.lab.report(accession) if accession else None
        if report is None:
            raise VendorError("LAB-ACC-404", f"Accession {accession} not found")
        return report

    # -- stats and reset ------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._sessions.reset()
        super().reset()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            ours: dict[str, Any] = self._sessions.stats()
        ours.update(super().stats())
        return ours


def _iso_date(text: str | None, name: str) -> _dt.date:
    text = (text or "").strip()
    if _ISO_DATE.match(text):
        try:
            return _dt.date.fromisoformat(text)
        except ValueError:
            pass
    raise VendorError("LAB-BAD-REQUEST", f"{name} '{text}' is not a date (yyyy-MM-dd)")
