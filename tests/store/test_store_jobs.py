"""The queue of asynchronous writes: claims, lanes, leases, cancelling (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.asyncwrites import JobQueue
from bridge.asyncwrites.intake import lanes, wants_async
from bridge.store import Store

Run = Callable[[Callable[[Store], Awaitable[None]]], None]


@pytest.fixture(params=["sqlite", "postgresql"])
def with_store(request: pytest.FixtureRequest, tmp_path: Path) -> Run:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_url")

    def run(test: Callable[[Store], Awaitable[None]]) -> None:
        async def main() -> None:
            store = await Store.open(url)
            try:
                await test(store)
            finally:
                await store.close()

        asyncio.run(main())

    return run


def _job(n: int) -> dict[str, Any]:
    return {"kind": "create", "n": n}


def test_jobs_of_one_lane_go_one_at_a_time_in_order(with_store: Run) -> None:
    async def test(store: Store) -> None:
        queue = JobQueue(store, "worker-1", lease=30)
        for n, lane in enumerate(["Patient/a", "Patient/a", "Patient/b", "Patient/a"]):
            await queue.add(client_id="app", lanes=[lane], request=_job(n))
        first = await queue.claim()
        second = await queue.claim()
        assert first is not None and second is not None
        assert (first.request["n"], second.request["n"]) == (0, 2)  # job 1 waits for job 0
        assert await queue.claim() is None
        await queue.finish(first, "done", 201, {"response": {"status": "201"}})
        third = await queue.claim()
        assert third is not None and third.request["n"] == 1
        # A job handed back to wait still holds its place in the lane.
        await queue.later(third, 60, unsure=False)
        assert await queue.claim() is None

    with_store(test)


def test_a_job_for_two_patients_waits_for_both_lanes(with_store: Run) -> None:
    async def test(store: Store) -> None:
        queue = JobQueue(store, "worker-1", lease=30)
        await queue.add(client_id="app", lanes=["Patient/a"], request=_job(0))
        await queue.add(client_id="app", lanes=["Patient/a", "Patient/b"], request=_job(1))
        await queue.add(client_id="app", lanes=["Patient/b"], request=_job(2))
        first = await queue.claim()
        assert first is not None and first.request["n"] == 0
        assert await queue.claim() is None  # 1 waits for 0; 2 waits for 1
        await queue.finish(first, "done", 201, {"response": {}})
        claimed = [await queue.claim(), await queue.claim()]
        assert [j.request["n"] if j else None for j in claimed] == [1, None]

    with_store(test)


def test_a_job_whose_worker_died_is_claimed_again_as_unsure(with_store: Run) -> None:
    async def test(store: Store) -> None:
        dead = JobQueue(store, "dead-worker", lease=0.2)
        await dead.add(client_id="app", lanes=["Patient/a"], request=_job(0))
        held = await dead.claim()
        assert held is not None and not held.suspect
        live = JobQueue(store, "live-worker", lease=30)
        assert await live.claim() is None  # the lease still holds
        deadline = time.monotonic() + 10
        while (again := await live.claim()) is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert again.suspect and again.attempts == 2
        # The dead worker's late result is not taken.
        assert not await dead.finish(held, "done", 201, {"response": {}})
        assert await live.finish(again, "done", 201, {"response": {"status": "201"}})
        stored = await live.get(again.id, "app")
        assert stored is not None and stored.state == "done" and stored.status == 201

    with_store(test)


def test_only_a_queued_job_of_its_own_client_is_cancelled(with_store: Run) -> None:
    async def test(store: Store) -> None:
        queue = JobQueue(store, "worker-1", lease=30)
        first = await queue.add(client_id="app", lanes=["Patient/a"], request=_job(0))
        second = await queue.add(client_id="app", lanes=["Patient/a"], request=_job(1))
        assert await queue.cancel(second, "other-app") is None
        assert await queue.get(second, "other-app") is None
        claimed = await queue.claim()
        assert claimed is not None and claimed.id == first
        assert await queue.cancel(first, "app") == "running"
        assert await queue.cancel(second, "app") == "cancelled"
        await queue.finish(claimed, "done", 201, {"response": {}})
        assert await queue.claim() is None  # the cancelled job is never delivered
        assert await queue.depth() == (0, None)

    with_store(test)


def test_depth_counts_unfinished_jobs(with_store: Run) -> None:
    async def test(store: Store) -> None:
        queue = JobQueue(store, "worker-1", lease=30)
        before = time.time()
        for n in range(3):
            await queue.add(client_id=None, lanes=[f"Patient/{n}"], request=_job(n))
        count, oldest = await queue.depth()
        assert count == 3 and oldest is not None and oldest >= before
        job = await queue.claim()
        assert job is not None
        await queue.finish(job, "failed", 422, {"response": {"status": "422"}})
        assert (await queue.depth())[0] == 2
        assert await queue.purge(time.time() + 1) == 1

    with_store(test)


def test_lanes_are_the_patients_written_for() -> None:
    reading = {"resourceType": "Observation", "subject": {"reference": "Patient/1"}}
    other = {"resourceType": "Observation", "subject": {"reference": "Patient/2"}}
    assert lanes([("Observation", None, reading)]) == ["Patient/1"]
    assert lanes([("Observation", None, reading), ("Observation", None, other)]) == [
        "Patient/1",
        "Patient/2",
    ]
    assert lanes([("Practitioner", None, {"resourceType": "Practitioner"})]) == ["Practitioner"]
    assert lanes([("Observation", "x1", None)]) == ["Observation/x1"]


@pytest.mark.parametrize(
    ("prefer", "expected"),
    [
        ("respond-async", True),
        ("return=minimal, Respond-Async", True),
        ("respond-async; wait=10", True),
        ("return=representation", False),
        (None, False),
    ],
)
def test_prefer_respond_async(prefer: str | None, expected: bool) -> None:
    assert wants_async(prefer) is expected


def test_a_poll_that_finds_nothing_does_not_wait_for_the_write_lock(tmp_path: Path) -> None:
    # An idle worker polls every half second; on SQLite a poll that took the write lock
    # would hold up every audit commit for as long as its statements take.
    import sqlite3

    path = tmp_path / "store.db"

    async def main() -> None:
        store = await Store.open(f"sqlite:///{path}")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # a writer holds the database
        try:
            queue = JobQueue(store, "worker-1", lease=30)
            assert await asyncio.wait_for(queue.claim(), 2) is None
        finally:
            other.execute("ROLLBACK")
            other.close()
            await store.close()

    asyncio.run(main())
