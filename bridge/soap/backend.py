"""One legacy system: its endpoint, transport, session pool and session style.

`Backend.run(work)` leases a session, logs it in if needed, runs `work` (all
the SOAP calls of one FHIR interaction) and returns the session. When the
legacy system says the session expired, the backend logs in again and runs the
whole of `work` once more: a multi-call interaction must not resume halfway
on a new session whose context (selected patient, cursors) is empty.

Everything an interaction does spends from one deadline (`RetryPolicy.deadline`):
the wait for a session, logins, each call (no call waits longer than what is
left) and the pauses between retries. A read-only interaction (`idempotent`)
is tried again after a transport failure or an expired session, with capped,
jittered backoff, as long as retries and the deadline allow. A write is tried
again only while nothing of it can have reached the legacy system: the
connection was never made, or the session was refused before any call of the
interaction was answered. Otherwise its failure (`ReadTimeout`,
`ConnectionLost`) goes to the caller, who must find out what happened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lxml import etree

from bridge.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    PoolExhausted,
    SessionLimitReached,
)
from bridge.soap.breaker import CircuitBreaker
from bridge.soap.envelope import EnvelopeTemplate, HeaderTemplate, Value
from bridge.soap.pool import Session, SessionPool, SlotBudget
from bridge.soap.retry import Deadline, RetryPolicy
from bridge.soap.transport import (
    ConnectionLost,
    ReadTimeout,
    Refused,
    SoapRequest,
    SoapResponse,
    Transport,
    Unsent,
)
from bridge.soap.wssecurity import UsernameToken
from bridge.soap.xml import FaultCodePath, SoapFault, parse_envelope

__all__ = [
    "Backend",
    "BackendStats",
    "BodyErrors",
    "CallRecord",
    "DeadlineExceeded",
    "SessionStyle",
]

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


class DeadlineExceeded(BackendTimeout):
    """The interaction used up its deadline (session wait, logins, calls, retries)."""


@dataclass
class BackendStats:
    calls: int = 0
    logins: int = 0
    relogins: int = 0
    logouts: int = 0
    deadlines: int = 0  # interactions that ran out of time
    # Retries by reason (transport, connect, expired-session), and writes whose
    # outcome was unknown, by how that was resolved (applied, not-applied, unknown).
    retries: collections.Counter[str] = field(default_factory=collections.Counter)
    ambiguous: collections.Counter[str] = field(default_factory=collections.Counter)
    # Pages of cursor searches by how they began: "first page", "resumed" (the
    # cursor continued) or "replayed: <why>" (the search ran again up to the page;
    # see bridge/gateway/search.py).
    pages: collections.Counter[str] = field(default_factory=collections.Counter)


class NoSlot(Exception):
    """No slot of the shared session budget for a new session (nothing was sent)."""


class _Retry(Exception):
    def __init__(self, reason: str, error: BackendUnavailable | BackendTimeout | Exception) -> None:
        self.reason = reason
        self.error = error


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
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
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
        self.policy = policy or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self.stats = BackendStats()
        self.fingerprint = ""
        # Called with (operation, outcome, seconds) after every SOAP call.
        self.observe: Callable[[str, str, float], None] | None = None
        # The budget shared by every replica (set once the store is open): a login
        # takes one of its `pool.max_size` slots first.
        self.budget: SlotBudget | None = None
        self._returns: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def _time_left(self, deadline: Deadline | None) -> float:
        """The timeout of the next call: `timeout`, or less when the deadline is near."""
        if deadline is None:
            return self.timeout
        left = deadline.remaining()
        if left <= 0:
            raise self._out_of_time()
        return min(self.timeout, left)

    def _out_of_time(self) -> DeadlineExceeded:
        self.stats.deadlines += 1
        return DeadlineExceeded(
            f"The legacy system '{self.name}' did not answer within the "
            f"{self.policy.deadline:g} s the gateway allows one interaction; retry later."
        )

    async def _send(
        self,
        template: EnvelopeTemplate,
        body: bytes,
        cookie: str | None = None,
        deadline: Deadline | None = None,
    ) -> tuple[etree._Element, SoapResponse]:
        op = template.operation.name
        headers = template.http_headers
        if cookie is not None:
            headers = {**headers, "Cookie": cookie}
        timeout = self._time_left(deadline)
        self.breaker.before()
        self.stats.calls += 1
        started = time.perf_counter()
        outcome = "error"
        try:
            response = await self.transport.send(
                SoapRequest(self.endpoint, body, headers, op, timeout)
            )
            outcome = (
                "ok" if response.status < 400 else "fault" if response.status == 500 else "error"
            )
        except Unsent:
            outcome = "unsent"
            self.breaker.failure()
            raise
        except (ReadTimeout, ConnectionLost) as exc:
            outcome = "timeout" if isinstance(exc, ReadTimeout) else "lost"
            self.breaker.failure()
            raise
        except BackendTimeout as exc:  # a transport that does not say more
            outcome = "timeout"
            self.breaker.failure()
            raise ReadTimeout(exc.diagnostics) from exc
        except BackendUnavailable as exc:
            outcome = "lost"
            self.breaker.failure()
            raise ConnectionLost(exc.diagnostics) from exc
        finally:
            if self.observe is not None:
                self.observe(op, outcome, time.perf_counter() - started)
        if response.status >= 500 and not response.body.lstrip().startswith(b"<"):
            self.breaker.failure()
            raise Refused()
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
                raise Refused() from None
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
            try:
                await self._login(session, session.deadline)
            except (ReadTimeout, ConnectionLost) as exc:
                # Only the login was lost: nothing of the interaction was sent.
                raise Unsent(exc.diagnostics) from exc
        body, cookie = self._envelope(template, values, session.token)
        reply, _ = await self._send(template, body, cookie, session.deadline)
        session.answered += 1
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

    async def _login(self, session: Session, deadline: Deadline | None = None) -> None:
        style = self.style
        if style.login is None:
            return
        session.forget()  # a new login replaces whatever the session had
        if self.budget is not None:
            await self._take_slot(session)
        body = style.login.render(style.login_values)
        try:
            reply, response = await self._send(style.login, body, None, deadline)
        except SoapFault as fault:
            session.forget()
            if fault.vendor_code in style.limit_codes:
                raise SessionLimitReached(retry_after=2) from None
            raise
        except BaseException:
            session.forget()
            raise
        if style.login_check is not None and not style.login_check(reply):
            raise BackendError("The legacy system refused the gateway's login.")
        if style.kind == "cookie":
            token = (response.cookies.get(style.cookie or "") or "").strip()
        else:
            token = (reply.findtext(style.token_path or "") or "").strip()
        if not token:
            session.forget()
            raise BackendError("The legacy system's login answer carried no session token.")
        session.token = token
        self.stats.logins += 1

    def attach_budget(self, budget: SlotBudget | None) -> None:
        """Share the legacy session cap with every other gateway process (see budget.py)."""
        if budget is self.budget:
            return
        self.budget = budget
        if budget is not None and self.style.logs_in and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Each second: try for new slots again; give idle ones back if others wait."""
        while True:
            await self._sleep(1.0)
            budget = self.budget
            if budget is None:
                continue
            self.pool.soft_max = None
            try:
                surplus = await budget.surplus(self.name, self.pool.max_size)
                evicted = self.pool.evict_idle(surplus)
                # Under steady load no session is idle when the sweep looks: the rest
                # are given back as they are released, or the other process starves.
                self.pool.owe(surplus - len(evicted))
                for session in evicted:
                    await self._logout(session)
            except Exception as exc:  # the sweeper outlives any one failure
                log.warning("session budget sweep of %s failed: %s", self.name, type(exc).__name__)

    async def _take_slot(self, session: Session) -> None:
        budget = self.budget
        assert budget is not None
        deadline = session.deadline
        waiting = False
        try:
            while True:
                slot = await budget.acquire(self.name, self.pool.max_size)
                if slot is not None:
                    break
                if self.pool.others_logged_in(session):
                    # Make do with this process's own sessions: wait for one of them.
                    self.pool.soft_max = sum(1 for s in self.pool.sessions() if s.token is not None)
                    raise NoSlot()
                if not waiting:
                    waiting = True
                    await budget.want(self.name)  # holders above their share give back
                pause = 0.05 + 0.1 * self._jitter()
                if deadline is None or pause >= deadline.remaining():
                    raise SessionLimitReached(
                        f"Every session the legacy system '{self.name}' allows is in use "
                        "by the gateway's replicas; retry shortly.",
                        retry_after=1,
                    )
                await self._sleep(pause)
        finally:
            if waiting:
                await budget.unwant(self.name)
        name = self.name

        def give_back(slot: int) -> None:
            task = asyncio.get_running_loop().create_task(self._give_back(name, slot))
            self._returns.add(task)
            task.add_done_callback(self._returns.discard)

        session.slot = slot
        session.give_back = give_back

    async def _give_back(self, name: str, slot: int) -> None:
        assert self.budget is not None
        await self.budget.release(name, slot)

    async def pause(self, seconds: float) -> None:
        """Wait on the backend's clock (tests inject one that does not sleep)."""
        if seconds > 0:
            await self._sleep(seconds)

    def deadline(self) -> Deadline:
        """A fresh deadline for one interaction on this system."""
        return Deadline(self.policy.deadline, self._clock)

    async def run(
        self,
        work: Callable[[Session], Awaitable[T]],
        *,
        prefer: str | None = None,
        idempotent: bool = True,
        deadline: Deadline | None = None,
    ) -> T:
        """Run `work` on a leased session, within `deadline` (a fresh one by default).

        `idempotent` work (reads) is retried after transport failures; other
        work only while nothing of it can have reached the legacy system.
        """
        deadline = deadline or self.deadline()
        retries = 0
        relogged = False
        while True:
            try:
                return await self._attempt(work, prefer, idempotent, deadline)
            except _Retry as retry:
                error = retry.error
                if retry.reason == "no-slot":
                    # Wait for one of this process's logged-in sessions, within the deadline.
                    if deadline.expired:
                        raise self._final(self._out_of_time(), deadline) from None
                    self.stats.retries[retry.reason] += 1
                    continue
                if retry.reason == "expired-session" and not relogged:
                    # The documented one re-login: at once, outside the retry budget.
                    relogged = True
                    self.stats.retries[retry.reason] += 1
                    continue
                if retries >= self.policy.retries:
                    raise self._final(error, deadline) from None
                retries += 1
                pause = self.policy.backoff(retries, self._jitter)
                if pause >= deadline.remaining():
                    raise self._final(error, deadline) from None
                self.stats.retries[retry.reason] += 1
                log.info(
                    "retrying on %s after %s (retry %d, pause %.3fs)",
                    self.name,
                    retry.reason,
                    retries,
                    pause,
                )
                await self._sleep(pause)

    async def _attempt(
        self,
        work: Callable[[Session], Awaitable[T]],
        prefer: str | None,
        idempotent: bool,
        deadline: Deadline,
    ) -> T:
        if deadline.expired:
            raise _Retry("deadline", self._out_of_time())
        try:
            session = await self.pool.acquire(prefer, timeout=deadline.remaining())
        except PoolExhausted:
            if deadline.expired:
                raise self._out_of_time() from None
            raise
        session.deadline = deadline
        session.answered = 0
        discard = False
        try:
            return await work(session)
        except NoSlot:
            # No budget slot for a new session: drop this one and wait for a
            # logged-in one of this process (nothing was sent).
            discard = True
            raise _Retry("no-slot", PoolExhausted(retry_after=1)) from None
        except SoapFault as fault:
            if fault.vendor_code not in self.style.expired_codes:
                raise
            # The session expired under us: log in again and redo the whole
            # interaction, unless a write already got a call through.
            session.forget()
            self.stats.relogins += 1
            if idempotent or session.answered == 0:
                raise _Retry("expired-session", fault) from None
            raise
        except Unsent as exc:
            if idempotent or session.answered == 0:
                raise _Retry("connect", exc) from None
            raise
        except (ReadTimeout, ConnectionLost, Refused) as exc:
            if idempotent:
                raise _Retry("transport", exc) from None
            raise
        finally:
            if self.pool.release(session, discard=discard):
                # Owed to the shared budget: its logout frees the slot for the waiter.
                task = asyncio.get_running_loop().create_task(self._logout(session))
                self._returns.add(task)
                task.add_done_callback(self._returns.discard)

    def _final(self, error: Exception, deadline: Deadline) -> Exception:
        """The error a client sees once retries or the deadline are spent."""
        if isinstance(error, DeadlineExceeded):
            return error
        if deadline.expired:
            return self._out_of_time()
        if isinstance(error, BackendTimeout):
            return type(error)(
                f"The legacy system '{self.name}' did not answer in time; retry later."
            )
        if isinstance(error, BackendUnavailable):
            return type(error)(
                f"The legacy system '{self.name}' is unavailable; retry later.",
                retry_after=int(error.headers.get("Retry-After", "5")),
            )
        return error

    async def _logout(self, session: Session) -> None:
        style = self.style
        if session.token is None:
            return
        ended = False
        if style.logout is not None and style.logout_values is not None:
            try:
                body, cookie = self._envelope(
                    style.logout, style.logout_values(session.token), session.token
                )
                await self._send(style.logout, body, cookie)
                self.stats.logouts += 1
                ended = True
            except SoapFault as fault:
                ended = fault.vendor_code in style.expired_codes  # gone already
                log.warning("logout from %s failed: %s", self.name, fault.vendor_code)
            except Exception as exc:  # shutdown goes on whatever one logout does
                log.warning("logout from %s failed: %s", self.name, type(exc).__name__)
        if not ended:
            # The legacy system keeps the session until its idle timeout: so does the
            # budget, or another replica would log in over the legacy system's cap.
            self._give_back_later(session)
        session.forget()

    def _give_back_later(self, session: Session) -> None:
        if session.slot is None or session.give_back is None:
            return
        slot, give_back = session.slot, session.give_back
        session.slot = None
        with contextlib.suppress(RuntimeError):  # no running loop: the lease expires
            asyncio.get_running_loop().call_later(self.pool.idle_timeout, give_back, slot)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.pool.drain(self._logout)
        if self._returns:
            await asyncio.gather(*self._returns, return_exceptions=True)
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
