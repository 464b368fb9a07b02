"""The global legacy session budget: every replica's sessions together within the cap.

A legacy system allows so many concurrent sessions per account. Each gateway
process takes a lease on one numbered slot in the store before it logs a
session in and gives it back when the session ends; a lease carries an
expiry that its owner renews while alive, so the slots of a killed process
come free after `ttl` seconds (by which time the legacy system has usually
expired the sessions it left behind too: keep `ttl` at least as long as the
legacy system's idle timeout, or accept that both limits hold).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable

from sqlalchemy import and_, delete, select, update

from bridge.errors import ServiceUnavailable
from bridge.store.core import Store, StoreUnavailable
from bridge.store.tables import session_leases

__all__ = ["SessionBudget"]

log = logging.getLogger("bridge.store")


class SessionBudget:
    def __init__(
        self,
        store: Store,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.owner = secrets.token_hex(8)  # this process
        self._clock = clock
        self._held: dict[tuple[str, int], None] = {}
        # While this process waits for a slot it says so with a row of its own at a
        # negative slot number, so that holders above their fair share give some back.
        self._want_slot = -1 - int(self.owner[:6], 16)
        self._renewer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew_loop(), name="session-budget")

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        try:
            async with self.store.write() as conn:
                await conn.execute(
                    delete(session_leases).where(session_leases.c.owner == self.owner)
                )
        except StoreUnavailable:
            log.warning("session leases could not be returned; they expire on their own")
        self._held.clear()

    async def acquire(self, system: str, cap: int) -> int | None:
        """A free slot of `system` (0..cap-1), now leased by this process; None if all are taken.

        Raises ServiceUnavailable (503) when the store does not answer."""
        try:
            return await self._acquire(system, cap)
        except StoreUnavailable:
            raise ServiceUnavailable(
                "The gateway cannot reach its store to share the legacy session budget; "
                "retry shortly."
            ) from None

    async def _acquire(self, system: str, cap: int) -> int | None:
        now = self._clock()
        expires = now + self.ttl
        async with self.store.read() as conn:
            taken = {
                int(slot)
                for (slot,) in (
                    await conn.execute(
                        select(session_leases.c.slot).where(
                            and_(session_leases.c.system == system, session_leases.c.expires >= now)
                        )
                    )
                ).all()
            }
        for slot in range(cap):
            if slot in taken:
                continue
            insert = self.store.insert
            statement = (
                insert(session_leases)
                .values(system=system, slot=slot, owner=self.owner, expires=expires)
                .on_conflict_do_update(
                    index_elements=[session_leases.c.system, session_leases.c.slot],
                    set_={"owner": self.owner, "expires": expires},
                    where=session_leases.c.expires < now,
                )
            )
            async with self.store.write() as conn:
                done = await conn.execute(statement)
            if done.rowcount == 1:
                self._held[(system, slot)] = None
                return slot
        return None

    async def release(self, system: str, slot: int) -> None:
        self._held.pop((system, slot), None)
        try:
            await self._release(system, slot)
        except StoreUnavailable:
            log.warning("a session slot of %s could not be returned; it expires on its own", system)

    async def _release(self, system: str, slot: int) -> None:
        async with self.store.write() as conn:
            await conn.execute(
                delete(session_leases).where(
                    and_(
                        session_leases.c.system == system,
                        session_leases.c.slot == slot,
                        session_leases.c.owner == self.owner,
                    )
                )
            )

    async def want(self, system: str) -> None:
        """Say that this process waits for a slot of `system` (for the next few seconds)."""
        insert = self.store.insert
        expires = self._clock() + 5
        try:
            async with self.store.write() as conn:
                await conn.execute(
                    insert(session_leases)
                    .values(system=system, slot=self._want_slot, owner=self.owner, expires=expires)
                    .on_conflict_do_update(
                        index_elements=[session_leases.c.system, session_leases.c.slot],
                        set_={"expires": expires},
                    )
                )
        except StoreUnavailable:
            pass

    async def unwant(self, system: str) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self._release(system, self._want_slot)

    async def surplus(self, system: str, cap: int) -> int:
        """How many of its slots of `system` this process should give back now.

        Only while another process waits: then every process's fair share is the
        cap divided among the processes that hold or want slots."""
        now = self._clock()
        try:
            async with self.store.read() as conn:
                rows = (
                    await conn.execute(
                        select(session_leases.c.owner, session_leases.c.slot).where(
                            and_(session_leases.c.system == system, session_leases.c.expires >= now)
                        )
                    )
                ).all()
        except StoreUnavailable:
            return 0
        wanting = {owner for owner, slot in rows if slot < 0 and owner != self.owner}
        if not wanting:
            return 0
        parties = {owner for owner, _ in rows} | {self.owner}
        mine = sum(1 for owner, slot in rows if owner == self.owner and slot >= 0)
        return max(0, mine - max(1, cap // len(parties)))

    async def in_use(self, system: str) -> int:
        """Slots of `system` leased now, by every replica."""
        now = self._clock()
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    select(session_leases.c.slot).where(
                        and_(
                            session_leases.c.system == system,
                            session_leases.c.expires >= now,
                            session_leases.c.slot >= 0,
                        )
                    )
                )
            ).all()
        return len(rows)

    async def renew(self) -> None:
        if not self._held:
            return
        async with self.store.write() as conn:
            await conn.execute(
                update(session_leases)
                .where(session_leases.c.owner == self.owner)
                .values(expires=self._clock() + self.ttl)
            )

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.renew()
            except StoreUnavailable:
                log.error("session leases could not be renewed; the store did not answer")
