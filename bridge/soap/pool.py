"""A bounded pool of legacy sessions.

A FHIR interaction leases one session exclusively for all its SOAP calls. The
pool never holds more sessions than the legacy system allows; logins are lazy
(the backend logs a session in on first use); waiters queue in order and give
up after `wait_timeout` with a 503. A waiter may want one session in particular
(the one that holds its legacy cursor) for at most `prefer_wait`; it keeps its
place in the one queue, so it neither jumps ahead of those who came first nor
starves them.
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

# Cursors a session remembers (~150 bytes each). Enough for every walk one worker may
# serve on one session: with fewer, concurrent walks push each other's cursors out
# and every page replays its search (the legacy system drops what it no longer
# keeps itself; its invalid-cursor fault then replays just that page).
_MAX_CURSORS = 1024


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

    # Which search made each cursor (an opaque key): a legacy system that hands out
    # a cursor id again once it dropped the first must not resume another search.
    _searches: dict[str, str] = field(default_factory=dict, repr=False, init=False)

    def remember_cursor(self, cursor: str, position: int, search: str = "") -> None:
        self.cursors[cursor] = position
        self.cursors.move_to_end(cursor)
        self._searches[cursor] = search
        while len(self.cursors) > _MAX_CURSORS:
            oldest, _ = self.cursors.popitem(last=False)
            self._searches.pop(oldest, None)

    def holds(self, cursor: str, position: int, search: str = "") -> bool:
        """True when this session's `cursor` of that search stands at `position`."""
        return self.cursors.get(cursor) == position and self._searches.get(cursor) == search

    def take_cursor(self, cursor: str, position: int, search: str = "") -> bool:
        """Claim the cursor for one resume: no other page token can resume it after."""
        if not self.holds(cursor, position, search):
            return False
        del self.cursors[cursor]
        self._searches.pop(cursor, None)
        return True

    def forget(self) -> None:
        """The legacy system no longer knows this session."""
        self.token = None
        self.cursors.clear()
        self._searches.clear()
        if self.slot is not None and self.give_back is not None:
            self.give_back(self.slot)
        self.slot = None


# A wait whose end is this close (seconds) when the pool's timer fires ends then:
# uvloop's timers count whole milliseconds and may fire that much early.
_EARLY = 0.002


@dataclass(eq=False, slots=True)
class _Waiter:
    """One interaction waiting for a session: any, or (while `want`) that one only.

    Its future gets the session handed to it, or None when the wait is over
    (`ends`, loop time); `want` lapses at `want_ends`, after which any will do."""

    future: asyncio.Future[Session | None]
    want: str | None
    ends: float
    want_ends: float
    picky: bool = False  # waiting for one session until `want_ends`
    queued: bool = True


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
        # Every waiter, in order of arrival: a released session goes to the first
        # one it suits, so no waiter is passed over by later ones forever.
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self.waits = 0
        self.timeouts = 0
        # While the shared session budget has no slot for this process, it makes do
        # with the sessions it has: no new session objects beyond this many.
        self.soft_max: int | None = None
        # Sessions this process owes the shared budget (another process waits and
        # this one holds more than its share, all of them busy): the next ones
        # released leave the pool, to be logged out, instead of serving again.
        self.owed = 0
        # How long an interaction waits for the one session that holds its legacy
        # cursor (resuming there beats replaying the search elsewhere) before any will do.
        self.prefer_wait = 2.0
        # One timer for every waiter's end (`_expire`), due at the nearest of them (or
        # before: it finds out then), not a timer and a wake-up future per wait.
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at = 0.0
        self._expiry_loop: asyncio.AbstractEventLoop | None = None

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

    def _take_now(self, prefer: str | None) -> Session | None:
        """An idle session (`prefer` if idle), else a new one if the cap allows."""
        session = self._take_idle(prefer)
        if session is None and len(self._sessions) < self.cap:
            session = self._new()
        return session

    def _new(self) -> Session:
        session = Session(key=f"{self._prefix}-{next(self._serial)}")
        self._sessions[session.key] = session
        return session

    def session(self, key: str) -> Session | None:
        """The pool's session of that key, leased or idle; None if it has none."""
        return self._sessions.get(key)

    async def acquire(self, prefer: str | None = None, *, timeout: float | None = None) -> Session:
        """A session for one interaction; waits at most `wait_timeout` (or `timeout`,
        when shorter) for one to be free, then raises PoolExhausted.

        With `prefer`, the session of that key if it can be had: when it is leased,
        wait for it (at most `prefer_wait`, within the same whole wait) before
        taking another. Waiters are served in order of arrival, each by the first
        released session it takes."""
        held = self._sessions.get(prefer) if prefer is not None else None
        picky = held is not None and held.token is not None and held not in self._idle
        if not picky:
            session = self._take_now(prefer)
            if session is not None:
                return self._fresh(session)
        self.waits += 1
        loop = asyncio.get_running_loop()
        limit = self.wait_timeout if timeout is None else min(timeout, self.wait_timeout)
        now = loop.time()
        ends = now + limit
        future: asyncio.Future[Session | None] = loop.create_future()
        if picky:
            waiter = _Waiter(future, prefer, ends, min(now + self.prefer_wait, ends), picky=True)
        else:
            waiter = _Waiter(future, None, ends, ends)
        self._waiters.append(waiter)
        self._expire_at(loop, waiter.want_ends)
        try:
            session = await future
        except BaseException:
            # Cancelled: a session handed over just then goes back.
            if future.done() and not future.cancelled():
                handed = future.result()
                if handed is not None:
                    self._put_back(handed)
            future.cancel()
            raise
        finally:
            if waiter.queued:
                waiter.queued = False
                self._waiters.remove(waiter)
        if session is None:
            self.timeouts += 1
            raise PoolExhausted(retry_after=1)
        return self._fresh(session)

    def _expire_at(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """See that the pool's timer fires by `when` (loop time)."""
        expiry = self._expiry
        if expiry is not None:
            if self._expiry_loop is loop and self._expiry_at <= when:
                return
            expiry.cancel()
        self._expiry_at = when
        self._expiry_loop = loop
        self._expiry = loop.call_at(when, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The pool's timer: a wait for one session that is over gives way to any
        session (one free now, else the next released), even when the whole wait
        ends with it; waits that are over end with None; then the timer is set
        for the nearest end left. Waits of another event loop are that loop's
        (the pool serves one loop at a time)."""
        self._expiry = None
        now = loop.time() + _EARLY
        nearest: float | None = None
        for waiter in list(self._waiters):
            if waiter.future.done() or waiter.future.get_loop() is not loop:
                continue
            if waiter.picky and waiter.want_ends <= now:
                waiter.picky = False
                waiter.want = None  # its session stayed busy (or left): any will do now
                session = self._take_now(None)
                if session is not None:
                    self._hand(waiter, session)
                    continue
            if waiter.ends <= now:
                self._hand(waiter, None)
                continue
            due = waiter.want_ends if waiter.picky else waiter.ends
            nearest = due if nearest is None else min(nearest, due)
        if nearest is not None:
            self._expire_at(loop, nearest)

    def _hand(self, waiter: _Waiter, session: Session | None) -> None:
        """End `waiter`'s wait with `session` (None: the wait is over); it leaves the queue."""
        waiter.queued = False
        self._waiters.remove(waiter)
        waiter.future.set_result(session)

    def _fresh(self, session: Session) -> Session:
        now = self._clock()
        if session.token is not None and now - session.last_used > self.idle_timeout * 0.9:
            # The legacy system has (or is about to have) dropped it for idleness.
            session.forget()
        return session

    def _put_back(self, session: Session) -> None:
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            if waiter.want is None or waiter.want == session.key:
                self._hand(waiter, session)
                return
        self._idle.append(session)

    def owe(self, count: int) -> None:
        """Give back `count` sessions as they are released, and make no new ones
        meanwhile (they would take the freed slots again)."""
        self.owed = max(0, count)
        if self.owed:
            self.soft_max = max(1, self.logged_in - self.owed)

    def release(self, session: Session, *, discard: bool = False) -> bool:
        """Return `session` to the pool. True when it left the pool instead, owed to
        the shared budget: the caller logs it out."""
        session.last_used = self._clock()
        session.deadline = None
        if self.owed and not discard and session.token is not None:
            self.owed -= 1
            self._remove(session)
            return True
        if discard:
            # The slot is freed; a waiter gets a fresh session that logs in.
            self._remove(session)
            return False
        self._put_back(session)
        return False

    def _remove(self, session: Session) -> None:
        """`session` leaves the pool; a waiter gets a fresh session if the cap allows."""
        del self._sessions[session.key]
        for waiter in self._waiters:
            if waiter.want == session.key:
                waiter.want = None  # its session is gone: any will do
        if any(not w.future.done() for w in self._waiters) and len(self._sessions) < self.cap:
            self._put_back(self._new())

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
