"""One legacy system: its endpoint, transport, session pool and session style.

`Backend.run(work)` leases a session, logs it in if needed, runs `work` (all
the SOAP calls of one FHIR interaction) and returns the session. When the
legacy system says the session expired, the backend logs in again and runs the
whole of `work` once more: a multi-call interaction must not resume halfway
on a new session whose context (selected patient, cursors) is empty.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lxml import etree

from bridge.errors import BackendError, BackendTimeout, BackendUnavailable, SessionLimitReached
from bridge.soap.breaker import CircuitBreaker
from bridge.soap.envelope import EnvelopeTemplate, HeaderTemplate, Value
from bridge.soap.pool import Session, SessionPool
from bridge.soap.transport import SoapRequest, SoapResponse, Transport
from bridge.soap.wssecurity import UsernameToken
from bridge.soap.xml import FaultCodePath, SoapFault, parse_envelope

__all__ = ["Backend", "BackendStats", "BodyErrors", "CallRecord", "SessionStyle"]

log = logging.getLogger("bridge.soap")
T = TypeVar("T")
REDACTED = "***"  # stands for a session token in anything shown to people


@dataclass(frozen=True)
class SessionStyle:
    """How a system holds sessions, compiled from its `system.yaml`.

    kind: header-token (login; token in a SOAP header), body-token (login;
    token in a request element), cookie (login; an HTTP cookie), ws-security
    (a UsernameToken on every call), credentials (user and password in request
    elements of every call), none.
    """

    kind: str
    login: EnvelopeTemplate | None = None
    login_values: Mapping[str, Value] = field(default_factory=dict)
    token_path: str | None = None  # Clark-notation path of the token in the login reply
    login_check: Callable[[etree._Element], bool] | None = None
    header: HeaderTemplate | None = None
    body_element: str | None = None
    cookie: str | None = None
    ws_security: UsernameToken | None = None
    credentials: tuple[str, str, str, str] | None = None  # (user element, user, pass element, pass)
    logout: EnvelopeTemplate | None = None
    logout_values: Callable[[str], Mapping[str, Value]] | None = None
    expired_codes: frozenset[str] = frozenset()
    limit_codes: frozenset[str] = frozenset()

    @property
    def logs_in(self) -> bool:
        return self.kind in ("header-token", "body-token", "cookie") and self.login is not None


@dataclass(frozen=True)
class BodyErrors:
    """Errors inside normal answers: per operation, a test and the code's path."""

    checks: Mapping[str, tuple[Callable[[etree._Element], bool], str]]

    def code(self, operation: str, reply: etree._Element) -> str | None:
        check = self.checks.get(operation)
        if check is None or not check[0](reply):
            return None
        return (reply.findtext(check[1]) or "").strip() or "unknown"


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
        body_errors: BodyErrors | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.transport = transport
        self.pool = pool
        self.style = style
        self.fault_code_path = fault_code_path
        self.timeout = timeout
        self.body_errors = body_errors
        self.breaker = breaker or CircuitBreaker(failures=5, cooldown=10)
        self.stats = BackendStats()
        self.fingerprint = ""
        # Called with (operation, outcome, seconds) after every SOAP call.
        self.observe: Callable[[str, str, float], None] | None = None

    async def _send(
        self, template: EnvelopeTemplate, body: bytes, cookie: str | None = None
    ) -> tuple[etree._Element, SoapResponse]:
        op = template.operation.name
        self.stats.calls += 1
        headers = template.http_headers
        if cookie is not None:
            headers = {**headers, "Cookie": cookie}
        self.breaker.before()
        started = time.perf_counter()
        outcome = "error"
        try:
            response = await self.transport.send(
                SoapRequest(self.endpoint, body, headers, op, self.timeout)
            )
            outcome = (
                "ok" if response.status < 400 else "fault" if response.status == 500 else "error"
            )
        except (BackendUnavailable, BackendTimeout):
            self.breaker.failure()
            raise
        finally:
            if self.observe is not None:
                self.observe(op, outcome, time.perf_counter() - started)
        if response.status >= 500 and not response.body.lstrip().startswith(b"<"):
            self.breaker.failure()
            raise BackendUnavailable()
        if response.status not in (200, 202, 500) and response.status < 500:
            raise BackendError(f"The legacy system answered HTTP {response.status}.")
        try:
            reply = parse_envelope(response.body, op, self.fault_code_path)
        except SoapFault:
            self.breaker.success()  # a fault is an answer: the system is up
            raise
        except BackendError:
            if response.status >= 500:
                self.breaker.failure()
                raise BackendUnavailable() from None
            raise
        self.breaker.success()
        if self.body_errors is not None:
            code = self.body_errors.code(op, reply)
            if code is not None:
                raise SoapFault(op, "in-body", code)
        return reply, response

    async def call(
        self, session: Session, template: EnvelopeTemplate, values: Mapping[str, Value]
    ) -> etree._Element:
        """One SOAP call on a leased session; returns the response's body element."""
        if self.style.logs_in and session.token is None:
            await self._login(session)
        body, cookie = self._envelope(template, values, session.token)
        reply, _ = await self._send(template, body, cookie)
        return reply

    def _envelope(
        self, template: EnvelopeTemplate, values: Mapping[str, Any], token: str | None
    ) -> tuple[bytes, str | None]:
        style = self.style
        cookie = None
        extra = ""
        if (
            style.kind == "body-token"
            and style.body_element
            and template.accepts(style.body_element)
        ):
            values = {**values, style.body_element: token}
        elif style.kind == "credentials" and style.credentials is not None:
            user_el, user, pass_el, password = style.credentials
            values = {**values, user_el: user, pass_el: password}
        elif style.kind == "cookie" and style.cookie and token is not None:
            cookie = f"{style.cookie}={token}"
        elif style.kind == "ws-security" and style.ws_security is not None:
            extra = style.ws_security.header()
        header = style.header if style.kind == "header-token" else None
        return template.render(values, header, token, extra), cookie

    def render(
        self, template: EnvelopeTemplate, values: Mapping[str, Any], token: str = REDACTED
    ) -> bytes:
        """The envelope `call` would send, with secrets replaced (for `explain`)."""
        style = self.style
        if style.kind in ("credentials", "ws-security"):
            # Render with placeholder credentials: explain never prints secrets.
            shown = Backend.__new__(Backend)
            shown.style = _redacted(style)
            return shown._envelope(template, values, token)[0]
        return self._envelope(template, values, token)[0]

    async def _login(self, session: Session) -> None:
        style = self.style
        if style.login is None:
            return
        body = style.login.render(style.login_values)
        try:
            reply, response = await self._send(style.login, body)
        except SoapFault as fault:
            if fault.vendor_code in style.limit_codes:
                raise SessionLimitReached(retry_after=2) from None
            raise
        if style.login_check is not None and not style.login_check(reply):
            raise BackendError("The legacy system refused the gateway's login.")
        if style.kind == "cookie":
            token = (response.cookies.get(style.cookie or "") or "").strip()
        else:
            token = (reply.findtext(style.token_path or "") or "").strip()
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
            body, cookie = self._envelope(
                style.logout, style.logout_values(session.token), session.token
            )
            await self._send(style.logout, body, cookie)
            self.stats.logouts += 1
        except Exception as exc:  # shutdown goes on whatever one logout does
            log.warning("logout from %s failed: %s", self.name, type(exc).__name__)
        session.forget()

    async def close(self) -> None:
        await self.pool.drain(self._logout)
        await self.transport.close()


def _redacted(style: SessionStyle) -> SessionStyle:
    import dataclasses

    credentials = style.credentials
    if credentials is not None:
        credentials = (credentials[0], REDACTED, credentials[2], REDACTED)
    wss = style.ws_security
    if wss is not None:
        wss = dataclasses.replace(wss, username=REDACTED, password=REDACTED)
    return dataclasses.replace(style, credentials=credentials, ws_security=wss)
