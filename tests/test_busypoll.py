"""Polling before sleeping (bridge/busypoll.py): the window, its extension by
activity, the budget for polling that finds nothing, and one loop at a time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from bridge import busypoll
from bridge.busypoll import BUDGET, BusyPoll
from bridge.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _off_afterwards() -> Iterator[None]:
    yield
    busypoll.configure(0)


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_kick_keeps_the_loop_polling_until_the_window_has_passed() -> None:
    async def main() -> None:
        clock = Clock()
        poll = BusyPoll(asyncio.get_running_loop(), 0.001, clock)
        poll.kick()
        await _turns(5)
        assert poll.polling  # the callback came back every turn
        clock.now += 0.0009
        await _turns()
        assert poll.polling
        clock.now += 0.0002
        await _turns()
        assert not poll.polling
        assert poll.stretches == 1
        assert poll.wasted_total == pytest.approx(0.001)

    asyncio.run(main())


def test_activity_within_the_window_extends_it_without_a_second_stretch() -> None:
    async def main() -> None:
        clock = Clock()
        poll = BusyPoll(asyncio.get_running_loop(), 0.001, clock)
        poll.kick()
        for _ in range(10):  # an answer every 0.8 ms: the loop never sleeps
            clock.now += 0.0008
            await _turns()
            assert poll.polling
            poll.kick()
        clock.now += 0.0011
        await _turns()
        assert not poll.polling
        assert poll.stretches == 1
        assert poll.wasted_total == pytest.approx(0.001)  # only the last window

    asyncio.run(main())


def test_polling_for_nothing_stops_at_the_budget_until_the_second_is_over() -> None:
    async def main() -> None:
        clock = Clock()
        window = 0.001
        poll = BusyPoll(asyncio.get_running_loop(), window, clock)
        allowed = round(BUDGET / window)  # stretches that find nothing, a second

        async def use_up_the_budget() -> None:
            for _ in range(allowed):
                poll.kick()
                assert poll.polling
                clock.now += window * 1.5  # nothing came: a slow legacy system
                await _turns()
                assert not poll.polling
            poll.kick()  # over budget: the loop sleeps at once
            await _turns()
            assert not poll.polling

        start = clock.now
        await use_up_the_budget()
        assert poll.stretches == allowed
        assert poll.wasted_total == pytest.approx(BUDGET)
        clock.now = start + 1.0  # the next second: polling again, with a new budget
        await use_up_the_budget()
        assert poll.stretches == 2 * allowed
        assert poll.wasted_total == pytest.approx(2 * BUDGET)

    asyncio.run(main())


def test_off_unless_configured_and_left_to_the_gateway_by_the_settings() -> None:
    # Imported alone (tests, tools, the in-process benchmark), nothing polls.
    imported = subprocess.run(
        [sys.executable, "-c", "from bridge import busypoll; print(busypoll._window[0])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == "0.0"

    async def main() -> None:
        busypoll.kick(asyncio.get_running_loop())

    busypoll.configure(0)
    asyncio.run(main())
    assert busypoll.current() is None
    assert Settings.model_fields["busy_poll"].default is None  # the gateway's choice, below


@pytest.mark.parametrize(
    ("workers", "cores", "window"),
    [(1, 2, busypoll.DEFAULT_WINDOW), (3, 4, busypoll.DEFAULT_WINDOW), (2, 2, 0.0), (4, 2, 0.0)],
)
def test_by_default_a_gateway_polls_while_it_leaves_a_core_idle(
    workers: int, cores: int, window: float
) -> None:
    assert busypoll.window_for(None, workers, cores) == window


@pytest.mark.parametrize("setting", [0.0, 0.0005])
def test_a_window_set_in_the_settings_is_kept_whatever_the_workers(setting: float) -> None:
    assert busypoll.window_for(setting, 1, 2) == setting
    assert busypoll.window_for(setting, 8, 2) == setting


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_the_cores_counted_are_those_the_process_may_run_on(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    no_quota = tmp_path / "cpu.max"
    no_quota.write_text("max 100000\n")
    assert busypoll.cores(no_quota) == affinity
    assert busypoll.cores(tmp_path / "absent") == affinity  # no cgroup v2
    assert busypoll.window_for(None, busypoll.cores()) == 0.0
    fewer = busypoll.window_for(None, max(busypoll.cores() - 1, 1))
    assert fewer == (busypoll.DEFAULT_WINDOW if busypoll.cores() > 1 else 0.0)


@pytest.mark.parametrize(
    ("cpu_max", "limited"),
    [("150000 100000\n", 2), ("100000 100000", 1), ("5000 100000", 1), ("garbage", None)],
)
def test_a_cpu_quota_counts_as_the_cores_it_allows(
    tmp_path: Path, cpu_max: str, limited: int | None
) -> None:
    # A container's CPU limit (cgroup v2 `cpu.max`: quota and period), rounded up;
    # never more than the cores the process may run on, and unreadable: no limit.
    quota = tmp_path / "cpu.max"
    quota.write_text(cpu_max)
    unlimited = busypoll.cores(tmp_path / "absent")
    assert busypoll.cores(quota) == (min(limited, unlimited) if limited else unlimited)


def test_a_new_event_loop_polls_afresh() -> None:
    # A stretch left on a loop that ended must not stand for the next loop's.
    busypoll.configure(0.05)
    loops = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loops.append(loop)
        busypoll.kick(loop)
        poll = busypoll.current()
        assert poll is not None and poll.loop is loop and poll.polling
        assert poll.stretches == 1

    asyncio.run(main())  # ends while its stretch is open
    asyncio.run(main())
    assert loops[0] is not loops[1]


@pytest.mark.parametrize("value", [-0.001, 0.002])
def test_a_window_out_of_range_is_refused(value: float) -> None:
    with pytest.raises(ValidationError, match="busy_poll"):
        Settings(busy_poll=value)
