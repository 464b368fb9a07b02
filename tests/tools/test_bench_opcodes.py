"""bench/opcodes.py: bytecodes counted per request, tasks already running left out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.opcodes import OpcodeCount, concern

ROOT = str(Path(__file__).resolve().parents[2])


def _work(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


async def _request(n: int) -> None:
    _work(n)
    await asyncio.sleep(0)


def test_concerns_by_area() -> None:
    assert concern("bridge/middleware/accesslog.py") == "request id, access log, metrics"
    assert concern("bridge/soap/http.py") == "SOAP call"
    assert concern("<mapping mappings/hospital/Patient.yaml>") == "mapping"
    assert concern("starlette") == "routing and Starlette"
    assert concern(ROOT + "/bench/inproc.py") == "the harness (bench/)"
    assert concern("stdlib json") == "other"


def test_counts_grow_with_the_work_and_leave_out_tasks_already_running() -> None:
    async def main() -> dict[int, int]:
        stop = asyncio.Event()

        async def poller() -> None:
            while not stop.is_set():
                _work(1000)
                await asyncio.sleep(0)

        task = asyncio.create_task(poller())
        await asyncio.sleep(0)
        counted = {}
        for n in (10, 100):
            count = OpcodeCount(ROOT)
            count.start()
            await asyncio.create_task(_request(n))
            await asyncio.sleep(0)  # the poller runs meanwhile
            count.stop()
            counted[n] = sum(v for code, v in count.counts.items() if code.co_name == "_work")
            assert "Python bytecodes a request" in count.report(1, 5)
        stop.set()
        await task
        return counted

    counted = asyncio.run(main())
    assert 0 < counted[10] < counted[100]
    assert counted[100] < 1000  # the poller's calls of a thousand steps are not in it


def test_outside_a_running_loop_nothing_is_counted_and_nothing_breaks() -> None:
    count = OpcodeCount(ROOT)
    count.start()
    try:
        assert _work(10) == 45
    finally:
        count.stop()
    assert not count.counts
