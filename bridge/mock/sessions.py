"""Login sessions of a legacy system: tokens, idle expiry, a per-account cap.

The EHR (SOAP header token), the lab (ASP.NET cookie) and the pharmacy
(ticket in the body) all keep sessions the same way underneath; what
differs is the token's shape and the vendor codes they fault with, which
:class:`SessionRules` carries. Expiry is lazy: an idle session is only
noticed when someone uses it or counts live sessions.

The table has no lock of its own: it runs under its system's lock, so a
session lookup and the work done with it are one critical section.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.mock.state import Clock, VendorError

__all__ = ["Session", "SessionRules", "SessionTable"]

# Forgotten ids are kept only so a late caller hears "expired" rather than
# "invalid"; a bound keeps a long-running mock from growing without limit.
_EXPIRED_MEMORY = 10_000


@dataclass(frozen=True, slots=True)
class SessionRules:
    """The vendor codes and messages one system answers session trouble with."""

    auth_code: str
    limit_code: str
    invalid_code: str
    expired_code: str
    missing_message: str = "Missing session id"
    invalid_message: str = "Unknown session id"
    expired_message: str = "Session has expired; please log in"
    new_token: Callable[[], str] = lambda: secrets.token_hex(16)


@dataclass(slots=True)
class Session:
    """One live session; systems keep their per-session context here."""

    username: str
    last_used: float
    cursors: dict[str, Any] = field(default_factory=dict)
    selected_mrn: str | None = None  # the EHR's "select patient" context


class SessionTable:
    """The live sessions of one system; call every method under its lock."""

    def __init__(
        self,
        rules: SessionRules,
        *,
        username: str,
        password: str,
        max_sessions: int,
        idle_timeout: float,
        clock: Clock,
    ) -> None:
        self.rules = rules
        self._username = username
        self._password = password
        self._max = max_sessions
        self._idle = idle_timeout
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._expired: OrderedDict[str, None] = OrderedDict()
        self.logins = self.login_failures = self.logouts = self.peak = 0

    def login(self, username: str | None, password: str | None) -> str:
        rules = self.rules
        # Compare both, always, so a wrong username costs the same as a
        # wrong password, as a real system would try to ensure.
        user_ok = secrets.compare_digest((username or "").encode(), self._username.encode())
        pass_ok = secrets.compare_digest((password or "").encode(), self._password.encode())
        if not (user_ok and pass_ok):
            self.login_failures += 1
            raise VendorError(rules.auth_code, "Invalid username or password")
        now = self._clock()
        self._sweep(now)
        live = sum(1 for s in self._sessions.values() if s.username == username)
        if live >= self._max:
            self.login_failures += 1
            raise VendorError(
                rules.limit_code,
                f"User {username} already has {live} active sessions (maximum {self._max})",
            )
        token = rules.new_token()
        self._sessions[token] = Session(username=self._username, last_used=now)
        self.logins += 1
        self.peak = max(self.peak, len(self._sessions))
        return token

    def logout(self, token: str | None) -> bool:
        """End a session; ``False`` (and no error) if it was unknown or had expired."""
        session = self._sessions.pop(token or "", None)
        if session is None:
            return False
        if self._is_idle(session, self._clock()):
            self._forget(token or "")
            return False
        self.logouts += 1
        return True

    def use(self, token: str | None) -> Session:
        """The live session for a token, touched; faults if there is none."""
        rules = self.rules
        if not token:
            raise VendorError(rules.invalid_code, rules.missing_message)
        now = self._clock()
        session = self._sessions.get(token)
        if session is not None and self._is_idle(session, now):
            del self._sessions[token]
            self._forget(token)
            session = None
        if session is None:
            if token in self._expired:
                raise VendorError(rules.expired_code, rules.expired_message)
            raise VendorError(rules.invalid_code, rules.invalid_message)
        session.last_used = now
        return session

    def expire_all(self) -> int:
        tokens = list(self._sessions)
        for token in tokens:
            del self._sessions[token]
            self._forget(token)
        return len(tokens)

    def active(self) -> int:
        self._sweep(self._clock())
        return len(self._sessions)

    def reset(self) -> None:
        self._sessions.clear()
        self._expired.clear()
        self.logins = self.login_failures = self.logouts = self.peak = 0

    def stats(self) -> dict[str, int]:
        return {
            "logins": self.logins,
            "login_failures": self.login_failures,
            "logouts": self.logouts,
            "active_sessions": self.active(),
            "peak_sessions": self.peak,
        }

    def _is_idle(self, session: Session, now: float) -> bool:
        return now - session.last_used >= self._idle

    def _sweep(self, now: float) -> None:
        for token, session in list(self._sessions.items()):
            if self._is_idle(session, now):
                del self._sessions[token]
                self._forget(token)

    def _forget(self, token: str) -> None:
        self._expired[token] = None
        while len(self._expired) > _EXPIRED_MEMORY:
            self._expired.popitem(last=False)
