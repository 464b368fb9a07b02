"""A bounded pool of legacy sessions.

A FHIR interaction leases one session exclusively for all its SOAP calls. The
pool never holds more sessions than the legacy system allows; logins are lazy
(the backend logs a session in on first use); waiters queue in order and give
up after `wait_timeout` with a 503.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from bridge.errors import PoolExhausted

if TYPE_CHECKING:
    from bridge.soap.retry import Deadline

__all__ = ["Session", "SessionPool", "SlotBudget"]

_MAX_CURSORS = 32


class SlotBudget(Protocol):
    """Session slots shared with other gateway processes (bridge/store/budget.py)."""

    async def acquire(self, system: str, cap: int) -> int | None: ...

    async def release(self, system: str, slot: int) -> None: ...

    async def want(self, system: str) -> None: ...

    async def unwant(self, system: str) -> None: ...

    async def surplus(self, system: str, cap: int) -> int: ...


@dataclass(eq=False)
class Session:
    """One legacy session. `token` is None until it has logged in."""

    key: str
    token: str | None = None
    last_used: float = 0.0
    # Legacy cursors this session holds: cursor id -> position of its next record.
    cursors: collections.OrderedDict[str, int] = field(default_factory=collections.OrderedDict)
    # Set while leased: the interaction's deadline, and how many of its calls
    # the legacy system has answered (a write that got one through is never rerun).
    deadline: Deadline | None = None
    answered: int = 0
    # The slot of the global session budget this session holds while logged in,
    # and how to give it back (set by the backend; see bridge/store/budget.py).
    slot: int | None = None
    give_back: Callable[[int], None] | None = None

    def remember_cursor(self, cursor: str, position: int) -> None:
        self.cursors[cursor] = position
        self.cursors.move_to_end(cursor)
        while len(self.cursors) > _MAX_CURSORS:
            self.cursors.popitem(last=False)

    def forget(self) -> None:
        """The legacy system no longer knows this session."""
        self.token = None
        self.cursors.clear()
        if self.slot is not None and self.give_back is not None:
            self.give_back(self.slot)
        self.slot = None


class SessionPool:
    def __init__(
        self,
        *,
        max_size: int,
        idle_timeout: float,
        wait_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.wait_timeout = wait_timeout
        self._clock = clock
        self._prefix = secrets.token_hex(4)
        self._serial = itertools.count(1)
        self._idle: list[Session] = []
        self._sessions: dict[str, Session] = {}
        self._waiters: collections.deque[asyncio.Future[Session]] = collections.deque()
        self.waits = 0
        self.timeouts = 0
        # While the shared session budget has no slot for this process, it makes do
        # with the sessions it has: no new session objects beyond this many.
        self.soft_max: int | None = None
        # Interactions waiting for one session in particular (the one that holds
        # their legacy cursor): resuming there beats replaying the search elsewhere.
        self._wanted: dict[str, collections.deque[asyncio.Future[Session | None]]] = {}
        self.prefer_wait = 2.0

    @property
    def cap(self) -> int:
        if self.soft_max is None:
            return self.max_size
        return max(1, min(self.max_size, self.soft_max))

    @property
    def size(self) -> int:
        return len(self._sessions)

    @property
    def logged_in(self) -> int:
        """Sessions the legacy system knows (logged in), leased or idle."""
        return sum(1 for s in self._sessions.values() if s.token is not None)

    @property
    def in_use(self) -> int:
        return len(self._sessions) - len(self._idle)

    def _take_idle(self, prefer: str | None) -> Session | None:
        if not self._idle:
            return None
        if prefer is not None:
            for i, s in enumerate(self._idle):
                if s.key == prefer:
                    return self._idle.pop(i)
        return self._idle.pop()  # the most recently used: the warmest

    async def acquire(self, prefer: str | None = None, *, timeout: float | None = None) -> Session:
        """A session for one interaction; waits at most `wait_timeout` (or `timeout`,
        when shorter) for one to be free, then raises PoolExhausted.

        With `prefer`, the session of that key if it can be had: when it is leased,
        wait for it (at most `prefer_wait`) before taking another."""
        if prefer is not None:
            held = self._sessions.get(prefer)
            if held is not None and held.token is not None and held not in self._idle:
                wait = self.prefer_wait if timeout is None else min(timeout, self.prefer_wait)
                chosen = await self._wait_for(prefer, wait)
                if chosen is not None:
                    return self._fresh(chosen)
        session = self._take_idle(prefer)
        if session is None and len(self._sessions) < self.cap:
            session = Session(key=f"{self._prefix}-{next(self._serial)}")
            self._sessions[session.key] = session
        if session is None:
            self.waits += 1
            future: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            try:
                wait = self.wait_timeout if timeout is None else min(timeout, self.wait_timeout)
                session = await asyncio.wait_for(asyncio.shield(future), wait)
            except BaseException as exc:
                # Timed out or cancelled: a session handed over just as the waiter
                # gave up goes back to the pool instead of leaking.
                if future.done() and not future.cancelled():
                    self._put_back(future.result())
                future.cancel()
                if isinstance(exc, TimeoutError):
                    self.timeouts += 1
                    raise PoolExhausted(retry_after=1) from None
                raise
            finally:
                if future in self._waiters:
                    self._waiters.remove(future)
        return self._fresh(session)

    def _fresh(self, session: Session) -> Session:
        now = self._clock()
        if session.token is not None and now - session.last_used > self.idle_timeout * 0.9:
            # The legacy system has (or is about to have) dropped it for idleness.
            session.forget()
        return session

    async def _wait_for(self, key: str, wait: float) -> Session | None:
        """The session `key` once its holder releases it; None after `wait` or if it goes."""
        future: asyncio.Future[Session | None] = asyncio.get_running_loop().create_future()
        queue = self._wanted.setdefault(key, collections.deque())
        queue.append(future)
        try:
            return await asyncio.wait_for(asyncio.shield(future), wait)
        except TimeoutError:
            if future.done() and not future.cancelled() and future.result() is not None:
                session = future.result()
                assert session is not None
                return session  # handed over just as the wait ended: take it
            future.cancel()
            return None
        except BaseException:
            if future.done() and not future.cancelled() and future.result() is not None:
                session = future.result()
                assert session is not None
                self._put_back(session)
            future.cancel()
            raise
        finally:
            if future in queue:
                queue.remove(future)
            if not queue:
                self._wanted.pop(key, None)

    def _put_back(self, session: Session) -> None:
        wanted = self._wanted.get(session.key)
        while wanted:
            chooser = wanted.popleft()
            if not chooser.done():
                chooser.set_result(session)
                return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(session)
                return
        self._idle.append(session)

    def release(self, session: Session, *, discard: bool = False) -> None:
        session.last_used = self._clock()
        session.deadline = None
        if discard:
            # The slot is freed; a waiter gets a fresh session that logs in.
            del self._sessions[session.key]
            for waiter in self._wanted.pop(session.key, ()):
                if not waiter.done():
                    waiter.set_result(None)  # it waits for some other session instead
            if self._waiters and len(self._sessions) < self.cap:
                fresh = Session(key=f"{self._prefix}-{next(self._serial)}")
                self._sessions[fresh.key] = fresh
                self._put_back(fresh)
            return
        self._put_back(session)

    def evict_idle(self, count: int) -> list[Session]:
        """Take up to `count` idle, logged-in sessions out of the pool (to log them out)."""
        evicted: list[Session] = []
        for session in sorted(self._idle, key=lambda s: s.last_used):
            if len(evicted) >= count:
                break
            if session.token is not None:
                evicted.append(session)
        for session in evicted:
            self._idle.remove(session)
            del self._sessions[session.key]
        return evicted

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def others_logged_in(self, session: Session) -> bool:
        """True when another session of this pool holds a login (and will come back)."""
        return any(s.token is not None for k, s in self._sessions.items() if k != session.key)

    @asynccontextmanager
    async def lease(self, prefer: str | None = None) -> AsyncIterator[Session]:
        session = await self.acquire(prefer)
        try:
            yield session
        except BaseException:
            self.release(session)
            raise
        self.release(session)

    async def drain(self, close: Callable[[Session], Awaitable[None]]) -> None:
        """Close every idle session (at shutdown, after in-flight requests end)."""
        idle, self._idle = self._idle, []
        for session in idle:
            self._sessions.pop(session.key, None)
            if session.token is not None:
                await close(session)
