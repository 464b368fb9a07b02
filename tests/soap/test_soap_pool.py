"""SessionPool: bounded, fair, lazy, and honest about idle sessions."""

from __future__ import annotations

import asyncio

import pytest

from bridge.errors import PoolExhausted
from bridge.soap.pool import Session, SessionPool


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_pool(
    max_size: int = 2,
    *,
    idle_timeout: float = 300,
    wait_timeout: float = 5,
    clock: Clock | None = None,
) -> SessionPool:
    return SessionPool(
        max_size=max_size,
        idle_timeout=idle_timeout,
        wait_timeout=wait_timeout,
        clock=clock or Clock(),
    )


async def settle() -> None:
    """Let every ready task run up to its next real wait."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_pool_new_sessions_are_not_logged_in() -> None:
    async def main() -> None:
        pool = make_pool()
        session = await pool.acquire()

        assert session.token is None
        assert pool.size == 1
        assert pool.in_use == 1

    asyncio.run(main())


def test_pool_reuses_a_released_session() -> None:
    async def main() -> None:
        pool = make_pool()
        first = await pool.acquire()
        first.token = "T1"
        pool.release(first)

        again = await pool.acquire()

        assert again is first
        assert again.token == "T1"
        assert pool.size == 1

    asyncio.run(main())


def test_pool_never_exceeds_max_size_under_50_concurrent_leases() -> None:
    async def main() -> None:
        pool = make_pool(max_size=4, wait_timeout=5)
        active = 0
        peak = 0
        sizes: list[int] = []
        keys: set[str] = set()

        async def one(i: int) -> int:
            nonlocal active, peak
            async with pool.lease() as session:
                active += 1
                peak = max(peak, active)
                sizes.append(pool.size)
                keys.add(session.key)
                for _ in range(i % 3 + 1):
                    await asyncio.sleep(0)
                active -= 1
            return i

        done = await asyncio.gather(*(one(i) for i in range(50)))

        assert sorted(done) == list(range(50))
        assert peak == 4
        assert max(sizes) <= 4
        assert len(keys) == 4
        assert pool.size == 4
        assert pool.in_use == 0
        assert pool.waits > 0
        assert pool.timeouts == 0

    asyncio.run(main())


def test_pool_waiters_are_served_in_order() -> None:
    async def main() -> None:
        pool = make_pool(max_size=1)
        holder = await pool.acquire()
        order: list[int] = []

        async def waiter(i: int) -> None:
            async with pool.lease():
                order.append(i)
                await asyncio.sleep(0)

        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(waiter(i)))
            await settle()  # each waiter queues before the next one starts
        assert order == []

        pool.release(holder)
        await asyncio.gather(*tasks)

        assert order == [0, 1, 2, 3, 4, 5]

    asyncio.run(main())


def test_pool_waiter_times_out_into_pool_exhausted() -> None:
    async def main() -> None:
        pool = make_pool(max_size=1, wait_timeout=0.02)
        holder = await pool.acquire()

        with pytest.raises(PoolExhausted) as info:
            await pool.acquire()

        assert info.value.status == 503
        assert info.value.code == "transient"
        assert info.value.headers["Retry-After"] == "1"
        assert pool.timeouts == 1
        assert pool.size == 1

        # The timed-out waiter left no trace: the session goes back to the pool.
        pool.release(holder)
        assert pool.in_use == 0
        assert await pool.acquire() is holder

    asyncio.run(main())


def test_pool_prefer_gets_that_idle_session() -> None:
    async def main() -> None:
        pool = make_pool(max_size=3)
        a = await pool.acquire()
        b = await pool.acquire()
        c = await pool.acquire()
        for s in (a, b, c):
            pool.release(s)  # c, the last released, would come first

        assert await pool.acquire(prefer=a.key) is a
        assert await pool.acquire(prefer=b.key) is b
        assert await pool.acquire() is c

    asyncio.run(main())


def test_pool_prefer_unknown_key_gets_the_warmest() -> None:
    async def main() -> None:
        pool = make_pool(max_size=2)
        a = await pool.acquire()
        b = await pool.acquire()
        pool.release(a)
        pool.release(b)

        assert await pool.acquire(prefer="no-such-session") is b

    asyncio.run(main())


def test_pool_prefer_busy_session_does_not_wait_for_it() -> None:
    async def main() -> None:
        pool = make_pool(max_size=2)
        busy = await pool.acquire()

        other = await pool.acquire(prefer=busy.key)

        assert other is not busy

    asyncio.run(main())


def test_pool_idle_session_past_the_threshold_comes_back_logged_out() -> None:
    async def main() -> None:
        clock = Clock()
        pool = make_pool(max_size=1, idle_timeout=100, clock=clock)
        session = await pool.acquire()
        session.token = "T1"
        session.remember_cursor("CUR-1", 25)
        pool.release(session)

        clock.now += 91  # more than 0.9 * idle_timeout
        again = await pool.acquire()

        assert again is session
        assert again.token is None
        assert not again.cursors

    asyncio.run(main())


def test_pool_idle_session_within_the_threshold_keeps_its_token() -> None:
    async def main() -> None:
        clock = Clock()
        pool = make_pool(max_size=1, idle_timeout=100, clock=clock)
        session = await pool.acquire()
        session.token = "T1"
        session.remember_cursor("CUR-1", 25)
        pool.release(session)

        clock.now += 89
        again = await pool.acquire()

        assert again.token == "T1"
        assert again.cursors == {"CUR-1": 25}

    asyncio.run(main())


def test_pool_release_discard_frees_the_slot() -> None:
    async def main() -> None:
        pool = make_pool(max_size=1)
        broken = await pool.acquire()
        broken.token = "T1"

        pool.release(broken, discard=True)

        assert pool.size == 0
        fresh = await pool.acquire()
        assert fresh is not broken
        assert fresh.key != broken.key
        assert fresh.token is None
        assert pool.size == 1

    asyncio.run(main())


def test_pool_release_discard_hands_a_fresh_session_to_a_waiter() -> None:
    async def main() -> None:
        pool = make_pool(max_size=1)
        broken = await pool.acquire()
        broken.token = "T1"
        waiter = asyncio.create_task(pool.acquire())
        await settle()

        pool.release(broken, discard=True)
        fresh = await waiter

        assert fresh is not broken
        assert fresh.token is None
        assert pool.size == 1
        assert pool.in_use == 1

    asyncio.run(main())


def test_pool_lease_releases_on_error() -> None:
    async def main() -> None:
        pool = make_pool(max_size=1)

        with pytest.raises(RuntimeError):
            async with pool.lease():
                raise RuntimeError("work failed")

        assert pool.in_use == 0
        async with pool.lease():
            assert pool.in_use == 1

    asyncio.run(main())


def test_pool_a_shorter_wait_ends_first_and_the_longer_one_keeps_its_place() -> None:
    async def main() -> None:
        pool = make_pool(max_size=1, wait_timeout=5)
        holder = await pool.acquire()
        patient = asyncio.create_task(pool.acquire())
        await settle()
        # Arrive later, give up sooner: the pool's one timer is brought forward, and
        # set again for the next end once the first is over.
        sooner = asyncio.create_task(pool.acquire(timeout=1.0))
        with pytest.raises(PoolExhausted):
            await asyncio.wait_for(pool.acquire(timeout=0.02), 3)
        assert not sooner.done()
        with pytest.raises(PoolExhausted):
            await asyncio.wait_for(sooner, 3)
        assert pool.timeouts == 2
        assert not patient.done()

        pool.release(holder)
        assert await asyncio.wait_for(patient, 1) is holder
        assert list(pool._waiters) == []

    asyncio.run(main())


def test_a_wait_for_a_busy_session_no_longer_than_the_preference_still_takes_a_free_one() -> None:
    async def main() -> tuple[Session, Session]:
        pool = make_pool(max_size=2, wait_timeout=0.05)  # the whole wait within prefer_wait
        busy = await pool.acquire()
        busy.token = "T1"
        free = await pool.acquire()
        pool.release(free)
        got = await asyncio.wait_for(pool.acquire(prefer=busy.key), 3)
        return got, free

    got, free = asyncio.run(main())
    assert got is free


def test_a_wait_whose_session_left_takes_a_free_one_when_its_preference_lapses() -> None:
    async def main() -> tuple[Session, Session]:
        pool = make_pool(max_size=2, wait_timeout=5)
        wanted = await pool.acquire()
        wanted.token = "T1"
        free = await pool.acquire()
        pool.release(free)
        pool.prefer_wait = 0.05
        pool.soft_max = 1  # no new session may replace the one that leaves
        waiter = asyncio.create_task(pool.acquire(prefer=wanted.key))
        await settle()
        pool.release(wanted, discard=True)  # it leaves: any session will do now
        return await asyncio.wait_for(waiter, 3), free

    got, free = asyncio.run(main())
    assert got is free


def test_pool_many_waits_end_together_and_leave_no_waiter_behind() -> None:
    async def main() -> None:
        pool = make_pool(max_size=1, wait_timeout=0.02)
        holder = await pool.acquire()
        waits = [asyncio.create_task(pool.acquire()) for _ in range(20)]
        results = await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 1)
        assert all(isinstance(r, PoolExhausted) for r in results)
        assert pool.timeouts == 20
        assert list(pool._waiters) == []
        pool.release(holder)
        assert pool.in_use == 0

    asyncio.run(main())


def test_pool_waits_on_a_second_event_loop_end_on_time() -> None:
    pool = make_pool(max_size=1, wait_timeout=0.2)

    async def main() -> None:
        holder = await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await settle()
        pool.release(holder)
        pool.release(await waiter)  # served: the pool's timer is still set, on this loop

    asyncio.run(main())
    pool.wait_timeout = 0.3  # ends after that timer would have fired

    async def later() -> None:
        # That loop is closed and its timer never fires: this loop needs its own.
        holder = await pool.acquire()
        with pytest.raises(PoolExhausted):
            await asyncio.wait_for(pool.acquire(), 2)
        pool.release(holder)

    asyncio.run(later())
    assert pool.timeouts == 1


def test_pool_cancelled_waiter_does_not_leak_the_session_handed_to_it() -> None:
    async def main() -> None:
        pool = make_pool(max_size=1, wait_timeout=5)
        holder = await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await settle()

        # The waiter's request is cancelled (client gone, request timeout) and,
        # in the same loop iteration, the holder hands it the session.
        waiter.cancel()
        pool.release(holder)
        try:
            got = await waiter
        except asyncio.CancelledError:
            pass
        else:
            pool.release(got)

        assert pool.in_use == 0
        pool.wait_timeout = 0.05
        assert await pool.acquire() is holder

    asyncio.run(main())


def test_pool_drain_closes_logged_in_idle_sessions_only() -> None:
    async def main() -> None:
        pool = make_pool(max_size=4)
        s1, s2, s3, busy = [await pool.acquire() for _ in range(4)]
        s1.token = "T1"
        s3.token = "T3"
        busy.token = "TB"
        for s in (s1, s2, s3):
            pool.release(s)
        closed: list[Session] = []

        async def close(session: Session) -> None:
            closed.append(session)

        await pool.drain(close)

        assert sorted(s.key for s in closed) == sorted([s1.key, s3.key])
        assert busy not in closed
        assert pool.size == 1  # only the session still in use
        assert pool.in_use == 1

    asyncio.run(main())


def test_pool_session_remembers_at_most_1024_cursors() -> None:
    session = Session("k")
    for i in range(1030):
        session.remember_cursor(f"C{i}", i)
    session.remember_cursor("C10", 99)

    assert len(session.cursors) == 1024
    assert "C0" not in session.cursors and "C9" in session.cursors
    assert list(session.cursors)[-1] == "C10"
    assert session.cursors["C10"] == 99


def test_fifty_walks_on_one_session_all_resume_their_cursors() -> None:
    # One worker's only session serving 50 concurrent walks (its share of the slots).
    session = Session("k")
    for walk in range(50):
        session.remember_cursor(f"W{walk}", 25, f"search-{walk}")
    for page in range(2, 21):
        for walk in range(50):
            assert session.take_cursor(f"W{walk}", 25 * (page - 1), f"search-{walk}")
            session.remember_cursor(f"W{walk}", 25 * page, f"search-{walk}")


def test_an_interaction_waits_for_the_session_that_holds_its_cursor() -> None:
    async def run() -> list[str]:
        pool = make_pool(max_size=2)
        first = await pool.acquire()
        first.token = "T1"
        second = await pool.acquire()
        second.token = "T2"
        pool.release(second)  # idle, but not the one the next interaction wants
        order: list[str] = []

        async def resume() -> None:
            session = await pool.acquire(prefer=first.key)
            order.append(session.key)
            pool.release(session)

        task = asyncio.create_task(resume())
        await asyncio.sleep(0.01)
        assert not task.done()  # waiting for `first`, not taking the idle `second`
        pool.release(first)
        await task
        return order

    (key,) = asyncio.run(run())
    assert key.endswith("-1")


def test_the_wait_for_a_busy_session_is_bounded() -> None:
    async def run() -> str:
        pool = make_pool(max_size=2)
        busy = await pool.acquire()
        busy.token = "T1"
        pool.prefer_wait = 0.01
        other = await pool.acquire(prefer=busy.key)  # `busy` is never released
        return other.key

    assert asyncio.run(run()).endswith("-2")


def test_pool_a_waiter_for_any_session_goes_before_later_ones_wanting_that_one() -> None:
    async def main() -> list[str]:
        pool = make_pool(max_size=1)
        held = await pool.acquire()
        held.token = "T1"
        order: list[str] = []

        async def lease(name: str, prefer: str | None) -> None:
            session = await pool.acquire(prefer=prefer)
            order.append(name)
            await asyncio.sleep(0)
            pool.release(session)

        tasks = [asyncio.create_task(lease("any", None))]
        await settle()
        for i in range(3):
            tasks.append(asyncio.create_task(lease(f"cursor-{i}", held.key)))
            await settle()
        pool.release(held)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == ["any", "cursor-0", "cursor-1", "cursor-2"]


def test_pool_a_waiter_keeps_its_place_once_its_session_stayed_busy() -> None:
    async def main() -> tuple[str, str]:
        pool = make_pool(max_size=2)
        wanted = await pool.acquire()
        wanted.token = "T1"
        other = await pool.acquire()
        pool.prefer_wait = 0.01
        first = asyncio.create_task(pool.acquire(prefer=wanted.key))
        await settle()
        second = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.05)  # the first one's wait for `wanted` is over

        pool.release(other)
        got = await first
        assert not second.done()
        pool.release(got)
        return got.key, (await second).key

    first, second = asyncio.run(main())
    assert first == second
    assert first.endswith("-2")


def test_pool_the_wait_for_a_busy_session_counts_in_the_whole_wait() -> None:
    async def main() -> float:
        pool = make_pool(max_size=1, wait_timeout=0.2)
        busy = await pool.acquire()
        busy.token = "T1"
        pool.prefer_wait = 0.6
        started = asyncio.get_running_loop().time()
        with pytest.raises(PoolExhausted):
            await pool.acquire(prefer=busy.key)
        return asyncio.get_running_loop().time() - started

    assert asyncio.run(main()) < 0.5


def test_pool_waiting_for_a_discarded_session_takes_a_fresh_one_at_once() -> None:
    async def main() -> Session:
        pool = make_pool(max_size=1)
        broken = await pool.acquire()
        broken.token = "T1"
        pool.prefer_wait = 5
        waiter = asyncio.create_task(pool.acquire(prefer=broken.key))
        await settle()

        pool.release(broken, discard=True)
        return await asyncio.wait_for(waiter, 1)

    fresh = asyncio.run(main())
    assert fresh.token is None
    assert fresh.key.endswith("-2")


def test_pool_session_resumes_a_cursor_once_and_only_for_its_search() -> None:
    session = Session("k")
    session.remember_cursor("C1", 25, "search-a")

    assert not session.holds("C1", 25, "search-b")
    assert not session.take_cursor("C1", 25, "search-b")
    assert not session.take_cursor("C1", 50, "search-a")
    assert session.take_cursor("C1", 25, "search-a")
    assert not session.take_cursor("C1", 25, "search-a")  # a link used again replays
    assert not session.cursors


def test_pool_owed_sessions_leave_as_they_are_released_and_no_new_ones_replace_them() -> None:
    async def main() -> None:
        pool = make_pool(max_size=3)
        a, b, c = [await pool.acquire() for _ in range(3)]
        for session, token in ((a, "T1"), (b, "T2"), (c, "T3")):
            session.token = token
        # Waits for `a` (it holds this search's legacy cursor): a picky waiter.
        picky = asyncio.create_task(pool.acquire(prefer=a.key))
        await settle()

        pool.owe(1)
        assert pool.release(a) is True  # owed: out of the pool, for the caller to log out
        assert pool.session(a.key) is None and pool.owed == 0
        await settle()
        assert not picky.done()  # no new session in the place of the one given back

        assert pool.release(b) is False
        await settle()
        # `a` is gone: any session will do, at once and in the queue's order.
        assert picky.done() and picky.result() is b
        assert pool.size == 2

    asyncio.run(main())
