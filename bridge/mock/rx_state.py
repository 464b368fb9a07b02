"""The pharmacy vendor's state: tickets passed in the body, offset/limit paging."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from bridge.mock.options import MockOptions
from bridge.mock.rxdata import Prescription
from bridge.mock.sessions import SessionRules, SessionTable
from bridge.mock.state import Clock, SystemState, VendorError
from bridge.mock.world import World, build_world

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "RX_SESSIONS", "PharmacyState", "PrescriptionPage"]

DEFAULT_LIMIT = 20
MAX_LIMIT = 50

RX_SESSIONS = SessionRules(
    auth_code="RX-AUTH",
    limit_code="RX-LIMIT",
    invalid_code="RX-TICKET",
    expired_code="RX-TICKET",
    missing_message="A Ticket is required; call OpenSession first",
    invalid_message="Invalid ticket",
    expired_message="Ticket expired; call OpenSession again",
    new_token=lambda: "TKT-" + secrets.token_hex(12).upper(),
)


@dataclass(frozen=True, slots=True)
class PrescriptionPage:
    total: int
    prescriptions: tuple[Prescription, ...]


class PharmacyState(SystemState):
    """Tickets and prescriptions of the mock pharmacy."""

    def __init__(
        self, options: MockOptions, world: World | None = None, *, clock: Clock = time.monotonic
    ) -> None:
        super().__init__("pharmacy", internal_code="RX-INTERNAL", seed=options.seed, clock=clock)
        self.options = options
        self.world = world or build_world(options.seed, options.patients, options.reference_date())
        self._sessions = SessionTable(
            RX_SESSIONS,
            username=options.username,
            password=options.password,
            max_sessions=options.max_sessions,
            idle_timeout=options.session_idle_timeout,
            clock=clock,
        )

    def open_session(self, user: str | None, password: str | None) -> str:
        with self._lock:
            return self._sessions.login(user, password)

    def close_session(self, ticket: str | None) -> None:
        with self._lock:
            self._sessions.use(ticket)
            self._sessions.logout(ticket)

    def expire_sessions(self) -> int:
        with self._lock:
            return self._sessions.expire_all()

    def prescriptions(
        self, ticket: str | None, mrn: str | None, offset: int | None, limit: int | None
    ) -> PrescriptionPage:
        with self._lock:
            self._sessions.use(ticket)
        start = 0 if offset is None else offset
        size = DEFAULT_LIMIT if limit is None else limit
        if start < 0:
            raise VendorError("RX-BAD-REQUEST", f"Offset must be >= 0, got {start}")
        if not 1 <= size <= MAX_LIMIT:
            raise VendorError("RX-BAD-REQUEST", f"Limit must be 1..{MAX_LIMIT}, got {size}")
        # A quirk of this vendor: an unknown MRN is not an error, just nobody's list.
        everything = self.world.pharmacy.by_mrn.get((mrn or "").strip(), ())
        return PrescriptionPage(len(everything), everything[start : start + size])

    def reset(self) -> None:
        with self._lock:
            self._sessions.reset()
        super().reset()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            ours: dict[str, Any] = self._sessions.stats()
        ours.update(super().stats())
        return ours
