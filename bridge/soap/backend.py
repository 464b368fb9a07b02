"""One legacy system: its endpoint, transport, session pool and session style.

`Backend.run(work)` leases a session, logs it in if needed, runs `work` (all
the SOAP calls of one FHIR interaction) and returns the session. When the
legacy system says the session expired, the backend logs in again and runs the
whole of `work` once more: a multi-call interaction must not resume halfway
on a new session whose context (selected patient, cursors) is empty.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from lxml import etree

from bridge.errors import BackendError, BackendUnavailable, SessionLimitReached
from bridge.soap.envelope import EnvelopeTemplate, HeaderTemplate, Value
from bridge.soap.pool import Session, SessionPool
from bridge.soap.transport import SoapRequest, Transport
from bridge.soap.xml import FaultCodePath, SoapFault, parse_envelope

__all__ = ["Backend", "BackendStats", "CallRecord", "SessionStyle"]

log = logging.getLogger("bridge.soap")
T = TypeVar("T")
REDACTED = "***"  # stands for a session token in anything shown to people


@dataclass(frozen=True)
class SessionStyle:
    """How a system holds sessions, compiled from its `system.yaml`."""

    kind: str  # "header-token" or "none"
    login: EnvelopeTemplate | None = None
    login_values: Mapping[str, Value] = field(default_factory=dict)
    token_path: str | None = None  # Clark-notation path of the token in the login reply
    header: HeaderTemplate | None = None
    logout: EnvelopeTemplate | None = None
    logout_values: Callable[[str], Mapping[str, Value]] | None = None
    expired_codes: frozenset[str] = frozenset()
    limit_codes: frozenset[str] = frozenset()


@dataclass
class BackendStats:
    calls: int = 0
    logins: int = 0
    relogins: int = 0
    logouts: int = 0


@dataclass(frozen=True)
class CallRecord:
    """What one SOAP call carried: for `explain`, audit and tests (token redacted)."""

    operation: str
    envelope: bytes


class Backend:
    def __init__(
        self,
        *,
        name: str,
        endpoint: str,
        transport: Transport,
        pool: SessionPool,
        style: SessionStyle,
        fault_code_path: FaultCodePath | None,
        timeout: float,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.transport = transport
        self.pool = pool
        self.style = style
        self.fault_code_path = fault_code_path
        self.timeout = timeout
        self.stats = BackendStats()

    async def _send(self, template: EnvelopeTemplate, body: bytes) -> etree._Element:
        op = template.operation.name
        self.stats.calls += 1
        response = await self.transport.send(
            SoapRequest(self.endpoint, body, template.http_headers, op, self.timeout)
        )
        if response.status >= 500 and not response.body.lstrip().startswith(b"<"):
            raise BackendUnavailable()
        if response.status not in (200, 202, 500) and response.status < 500:
            raise BackendError(f"The legacy system answered HTTP {response.status}.")
        try:
            return parse_envelope(response.body, op, self.fault_code_path)
        except BackendError:
            if response.status >= 500:
                raise BackendUnavailable() from None
            raise

    async def call(
        self, session: Session, template: EnvelopeTemplate, values: Mapping[str, Value]
    ) -> etree._Element:
        """One SOAP call on a leased session; returns the response's body element."""
        if self.style.kind != "none" and session.token is None:
            await self._login(session)
        body = template.render(values, self.style.header, session.token)
        return await self._send(template, body)

    def render(
        self, template: EnvelopeTemplate, values: Mapping[str, Value], token: str = REDACTED
    ) -> bytes:
        """The envelope `call` would send, with the session token replaced."""
        return template.render(values, self.style.header, token)

    async def _login(self, session: Session) -> None:
        style = self.style
        if style.login is None or style.token_path is None:
            return
        body = style.login.render(style.login_values)
        try:
            reply = await self._send(style.login, body)
        except SoapFault as fault:
            if fault.vendor_code in style.limit_codes:
                raise SessionLimitReached(retry_after=2) from None
            raise
        token = (reply.findtext(style.token_path) or "").strip()
        if not token:
            raise BackendError("The legacy system's login answer carried no session token.")
        session.forget()
        session.token = token
        self.stats.logins += 1

    async def run(self, work: Callable[[Session], Awaitable[T]], *, prefer: str | None = None) -> T:
        async with self.pool.lease(prefer) as session:
            try:
                return await work(session)
            except SoapFault as fault:
                if fault.vendor_code not in self.style.expired_codes:
                    raise
            # The session expired under us: log in again and redo the whole interaction.
            session.forget()
            self.stats.relogins += 1
            return await work(session)

    async def _logout(self, session: Session) -> None:
        style = self.style
        if style.logout is None or style.logout_values is None or session.token is None:
            return
        try:
            body = style.logout.render(style.logout_values(session.token))
            await self._send(style.logout, body)
            self.stats.logouts += 1
        except Exception as exc:  # shutdown goes on whatever one logout does
            log.warning("logout from %s failed: %s", self.name, type(exc).__name__)
        session.forget()

    async def close(self) -> None:
        await self.pool.drain(self._logout)
        await self.transport.close()
