"""Polling before sleeping: after activity the event loop keeps polling for a
short while (`window`) instead of going to sleep in `epoll_wait` at once.

A gateway answering one request at a time sleeps twice a request: while the
legacy system answers, and until the client's next request. Each sleep costs
more than it lasts on a virtual machine: the sender's kernel has to wake the
sleeper (an interrupt to another processor, which the hypervisor takes), and
the sleeper resumes on cold caches. Polling through a short wait avoids both:
a read at one connection against the canned backend answered in 0.36-0.38 ms
instead of 0.48-0.50 (p50), for less CPU a read (`bench/quick.py`,
alternating; bench/README.md, thirteenth round).

Polling is bounded twice:

- A stretch of polling ends `window` after the last activity, so the loop polls
  at most `window` (1 ms at most, 0.25 ms by default) for the next event
  before it sleeps. Events that keep coming within the window keep it polling:
  the process then works or polls all the time, as it would be nearly busy at
  such a rate with the default window (~4,000 legacy calls and answers a
  second).
- The window that ends each stretch is spent for nothing. Once such windows add
  up to `BUDGET` of the current second, the loop polls no more until the second
  is over: in front of a slow legacy system (answers after milliseconds), each
  process spends at most a tenth of a core on polling, and an idle one nothing.

Each stretch is a callback the loop runs again each turn while the window is
open, so the loop's poll does not sleep. `bridge serve` (and each of its
workers) and `bridge demo` set the window from `busy_poll` (settings); 0 turns
it off, which is also the default for anything else that imports the gateway.

Polling spends a core that would otherwise be idle. Unless `busy_poll` says
otherwise, a gateway with as many workers as it has cores (its CPU affinity, or
its CPU quota where that is fewer) does not poll: there the core a worker polls
on is one its siblings, and whatever shares the machine, could use (two workers
on two cores, sharing them with the load: 3-4% more reads a second without;
bench/README.md, fourteenth round).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import weakref
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "BUDGET",
    "DEFAULT_WINDOW",
    "BusyPoll",
    "configure",
    "cores",
    "current",
    "kick",
    "window_for",
]

BUDGET = 0.1  # of each second, at most, polled for nothing
DEFAULT_WINDOW = 0.00025  # seconds, where `busy_poll` leaves it to the gateway
_PERIOD = 1.0  # seconds


class BusyPoll:
    """Polling after activity on one event loop, within the budget."""

    __slots__ = (
        "_clock",
        "_loop",
        "_paused_until",
        "_period_start",
        "_polling",
        "_until",
        "_wasted",
        "stretches",
        "wasted_total",
        "window",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Weakly: the loops' table below must not keep its keys alive.
        self._loop = weakref.ref(loop)
        self.window = window
        self._clock = clock
        self._until = 0.0  # polling goes on until then
        self._polling = False
        self._period_start = clock()
        self._wasted = 0.0  # in the current period
        self._paused_until = 0.0
        self.stretches = 0  # stretches of polling begun (tests, metrics)
        self.wasted_total = 0.0  # seconds polled for nothing, in all

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop()

    @property
    def polling(self) -> bool:
        return self._polling

    def kick(self) -> None:
        """Something happened: keep polling for `window` from now (within the budget)."""
        now = self._clock()
        self._until = now + self.window
        if self._polling or now < self._paused_until:
            return
        loop = self._loop()
        if loop is None:
            return
        self._polling = True
        self.stretches += 1
        loop.call_soon(self._poll)

    def _poll(self) -> None:
        now = self._clock()
        loop = self._loop()
        if now < self._until and loop is not None:
            loop.call_soon(self._poll)
            return
        self._polling = False
        # The window after the last activity passed with nothing arriving.
        if now - self._period_start >= _PERIOD:
            self._period_start = now
            self._wasted = 0.0
        self._wasted += self.window
        self.wasted_total += self.window
        if self._wasted >= BUDGET * _PERIOD - 1e-9:  # (sums of windows round down)
            self._paused_until = self._period_start + _PERIOD


# Each event loop's polling (a test's loops, a restarted server's), made at its
# first kick and gone with the loop.
_polls: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BusyPoll] = weakref.WeakKeyDictionary()
_last: list[BusyPoll | None] = [None]  # the last loop's, found without a lookup
_window = [0.0]


def cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may use: those it may run on (its CPU affinity, where
    the system has one), fewer under a CPU quota (cgroup v2 `cpu.max`, as a
    container's CPU limit sets it), rounded up."""
    affinity = getattr(os, "sched_getaffinity", None)
    count = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 here, or not readable: no quota known
        pass
    return count


def window_for(setting: float | None, workers: int, available: int | None = None) -> float:
    """The window `busy_poll` gives a gateway of `workers` processes on `available`
    cores (None: `cores()`): as set, or (None) `DEFAULT_WINDOW` while the gateway
    leaves a core idle, else 0."""
    if setting is not None:
        return setting
    if available is None:
        available = cores()
    return DEFAULT_WINDOW if workers < available else 0.0


def configure(window: float) -> None:
    """Poll for `window` seconds after activity (0: never), on every loop."""
    _window[0] = window
    _polls.clear()
    _last[0] = None


def kick(loop: asyncio.AbstractEventLoop) -> None:
    """Something happened on `loop` that more will soon follow: a legacy call sent,
    an answer written on a connection kept alive."""
    if not _window[0]:
        return
    poll = _last[0]
    if poll is None or poll.loop is not loop:
        poll = _polls.get(loop)
        if poll is None:
            poll = _polls[loop] = BusyPoll(loop, _window[0])
        _last[0] = poll
    poll.kick()


def current() -> BusyPoll | None:
    """The polling of the loop that kicked last."""
    return _last[0]
