"""The global session budget: replicas sharing a store never hold more slots than the cap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.store import Store
from bridge.store.budget import SessionBudget


async def _replicas(url: str, cap: int) -> None:
    stores = [await Store.open(url) for _ in range(3)]
    now = [1000.0]
    b0, b1, b2 = budgets = [SessionBudget(s, ttl=30, clock=lambda: now[0]) for s in stores]
    try:
        assert [await b0.acquire("ehr", cap) for _ in range(2)] == [0, 1]
        assert [await b1.acquire("ehr", cap) for _ in range(2)] == [2, 3]
        assert await b2.acquire("ehr", cap) is None  # every replica together: at the cap
        assert await b2.in_use("ehr") == cap
        # A replica gives one back: another can take it.
        await b1.release("ehr", 2)
        assert await b2.acquire("ehr", cap) == 2
        # A replica that dies stops renewing: after the ttl its slots come free.
        now[0] += 10
        await b1.renew()
        await b2.renew()
        now[0] += 25  # b0 last renewed 35 s ago, past its 30 s ttl
        assert await b2.acquire("ehr", cap) == 0
        assert await b1.acquire("ehr", cap) == 1
        assert await b0.in_use("ehr") == cap
        # Replicas racing for one system's slots get each slot once.
        got = await asyncio.gather(*(b.acquire("lab", 3) for b in budgets for _ in range(3)))
        assert sorted(s for s in got if s is not None) == [0, 1, 2]
    finally:
        for budget, store in zip(budgets, stores, strict=True):
            await budget.close()
            await store.close()


def test_replicas_on_sqlite_share_the_cap(tmp_path: Path) -> None:
    asyncio.run(_replicas(f"sqlite:///{tmp_path / 'store.db'}", 4))


def test_replicas_on_postgresql_share_the_cap(postgres_url: str) -> None:
    asyncio.run(_replicas(postgres_url, 4))


@pytest.mark.parametrize("cap", [1, 3])
def test_a_closed_budget_returns_its_slots(tmp_path: Path, cap: int) -> None:
    async def run() -> None:
        store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        first, second = SessionBudget(store), SessionBudget(store)
        assert [await first.acquire("ehr", cap) for _ in range(cap)] == list(range(cap))
        assert await second.acquire("ehr", cap) is None
        await first.close()
        assert await second.acquire("ehr", cap) == 0
        await second.close()
        await store.close()

    asyncio.run(run())
