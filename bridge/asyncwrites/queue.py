"""The queue of asynchronous writes, in the gateway's store (table `jobs`).

One job is one accepted write. Its states:

    queued     waiting its turn (after a failed attempt, until `not_before`)
    running    a worker holds its lease and is delivering it
    unsure     an attempt may have reached the legacy system and its answer was
               never recorded: the next attempt checks before sending again
    done       delivered; `status` and `body` hold the result
    failed     a definitive failure, or an outcome nobody can know; `body` says
    cancelled  its client cancelled it before delivery

A `running` job whose lease has expired (its worker died) counts as unsure.
Each unfinished job holds a row in `job_lanes` for every lane (patient) it
writes to; a job is claimed only when no earlier job holds a row in one of its
lanes, so one patient's writes are delivered in the order they were accepted.
Claims are atomic: BEGIN IMMEDIATE on SQLite, `FOR UPDATE SKIP LOCKED` and a
conditional UPDATE on PostgreSQL, so several workers and replicas never
deliver one job twice.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select, update

from bridge.store import Store
from bridge.store.tables import job_lanes, jobs

__all__ = ["FINISHED", "PENDING", "Job", "JobQueue"]

PENDING = ("queued", "running", "unsure")
FINISHED = ("done", "failed", "cancelled")


@dataclass
class Job:
    seq: int
    id: str
    lane: str
    client_id: str | None
    request: dict[str, Any]
    state: str
    attempts: int
    not_before: float
    lease_until: float | None
    created: float
    updated: float
    status: int | None = None
    result: dict[str, Any] | None = None
    # Claimed from `unsure` (or an expired lease): check before sending again.
    suspect: bool = False
    # When the previous attempt last held the job (its lease, or its hand-back).
    touched: float = 0.0

    @property
    def pending(self) -> bool:
        return self.state in PENDING


def _job(row: Any) -> Job:
    return Job(
        seq=int(row["seq"]),
        id=row["id"],
        lane=row["lane"],
        client_id=row["client_id"],
        request=orjson.loads(row["request"]),
        state=row["state"],
        attempts=int(row["attempts"]),
        not_before=float(row["not_before"]),
        lease_until=row["lease_until"],
        created=float(row["created"]),
        updated=float(row["updated"]),
        status=row["status"],
        result=orjson.loads(row["body"]) if row["body"] else None,
    )


def _client_is(client_id: str | None) -> ColumnElement[bool]:
    return jobs.c.client_id.is_(None) if client_id is None else jobs.c.client_id == client_id


class JobQueue:
    """The store side of asynchronous writes; `owner` names this process's leases."""

    def __init__(self, store: Store, owner: str, lease: float) -> None:
        self.store = store
        self.owner = owner
        self.lease = lease

    async def add(self, *, client_id: str | None, lanes: list[str], request: dict[str, Any]) -> str:
        """Store a job durably (committed when this returns); its id."""
        now = time.time()
        job_id = str(uuid.uuid4())
        async with self.store.write() as conn:
            seq = (
                await conn.execute(
                    jobs.insert()
                    .values(
                        id=job_id,
                        lane=lanes[0],
                        client_id=client_id,
                        request=orjson.dumps(request).decode(),
                        state="queued",
                        attempts=0,
                        not_before=now,
                        created=now,
                        updated=now,
                    )
                    .returning(jobs.c.seq)
                )
            ).scalar_one()
            await conn.execute(job_lanes.insert(), [{"lane": lane, "seq": seq} for lane in lanes])
        return job_id

    async def claim(self) -> Job | None:
        """Lease the oldest job that may go now, or None."""
        now = time.time()
        mine, other = job_lanes.alias("mine"), job_lanes.alias("other")
        waiting = exists().where(
            mine.c.seq == jobs.c.seq, other.c.lane == mine.c.lane, other.c.seq < mine.c.seq
        )
        query = (
            select(jobs)
            .where(
                or_(
                    jobs.c.state.in_(("queued", "unsure")),
                    and_(jobs.c.state == "running", jobs.c.lease_until < now),
                ),
                jobs.c.not_before <= now,
                ~waiting,
            )
            .order_by(jobs.c.seq)
            .limit(1)
        )
        # Most polls find nothing: they look in a read transaction, which never holds
        # up a writer (on SQLite, the audit trail's commits), and take the write lock
        # only to lease what they found.
        async with self.store.read() as conn:
            if (await conn.execute(query.with_only_columns(jobs.c.seq))).first() is None:
                return None
        if not self.store.sqlite:
            query = query.with_for_update(skip_locked=True, of=jobs)
        async with self.store.write() as conn:
            row = (await conn.execute(query)).mappings().first()
            if row is None:
                return None
            job = _job(row)
            job.suspect = job.state != "queued"
            job.touched = max(job.updated, job.lease_until or 0.0)
            done = await conn.execute(
                update(jobs)
                .where(jobs.c.seq == job.seq, jobs.c.state == job.state)
                .values(
                    state="running",
                    attempts=jobs.c.attempts + 1,
                    lease_owner=self.owner,
                    lease_until=now + self.lease,
                    updated=now,
                )
            )
            if done.rowcount != 1:  # another worker got it first
                return None
        job.state = "running"
        job.attempts += 1
        job.lease_until = now + self.lease
        return job

    def _held(self, job: Job) -> ColumnElement[bool]:
        return and_(
            jobs.c.seq == job.seq, jobs.c.state == "running", jobs.c.lease_owner == self.owner
        )

    async def renew(self, job: Job) -> bool:
        """Extend the lease; False when this process no longer holds the job."""
        until = time.time() + self.lease
        async with self.store.write() as conn:
            done = await conn.execute(update(jobs).where(self._held(job)).values(lease_until=until))
        job.lease_until = until
        return done.rowcount == 1

    async def finish(self, job: Job, state: str, status: int, result: dict[str, Any]) -> bool:
        """Record the final result (done or failed); False if the lease was lost."""
        assert state in ("done", "failed")
        location = result.get("response", {}).get("location")
        async with self.store.write() as conn:
            done = await conn.execute(
                update(jobs)
                .where(self._held(job))
                .values(
                    state=state,
                    status=status,
                    headers=orjson.dumps({"Location": location} if location else {}).decode(),
                    body=orjson.dumps(result),
                    request=orjson.dumps(job.request).decode(),
                    lease_owner=None,
                    lease_until=None,
                    updated=time.time(),
                )
            )
            if done.rowcount != 1:
                return False
            await conn.execute(delete(job_lanes).where(job_lanes.c.seq == job.seq))
        job.state, job.status, job.result = state, status, result
        return True

    async def later(self, job: Job, delay: float, *, unsure: bool) -> bool:
        """Give the job back to the queue, to be tried again after `delay` seconds."""
        now = time.time()
        async with self.store.write() as conn:
            done = await conn.execute(
                update(jobs)
                .where(self._held(job))
                .values(
                    state="unsure" if unsure else "queued",
                    not_before=now + delay,
                    request=orjson.dumps(job.request).decode(),
                    lease_owner=None,
                    lease_until=None,
                    updated=now,
                )
            )
        return done.rowcount == 1

    async def get(self, job_id: str, client_id: str | None) -> Job | None:
        """The job with this id if `client_id` is its client's."""
        async with self.store.read() as conn:
            row = (
                (await conn.execute(select(jobs).where(jobs.c.id == job_id, _client_is(client_id))))
                .mappings()
                .first()
            )
        return _job(row) if row is not None else None

    async def cancel(self, job_id: str, client_id: str | None) -> str | None:
        """Cancel a job no attempt has touched; the state it is in afterwards (None: no job)."""
        now = time.time()
        async with self.store.write() as conn:
            row = (
                await conn.execute(
                    select(jobs.c.seq, jobs.c.state).where(
                        jobs.c.id == job_id, _client_is(client_id)
                    )
                )
            ).first()
            if row is None:
                return None
            seq, state = row
            if state != "queued":
                return str(state)
            await conn.execute(
                update(jobs)
                .where(jobs.c.seq == seq, jobs.c.state == "queued")
                .values(state="cancelled", updated=now)
            )
            await conn.execute(delete(job_lanes).where(job_lanes.c.seq == seq))
        return "cancelled"

    async def depth(self) -> tuple[int, float | None]:
        """Unfinished jobs, and when the oldest of them was accepted."""
        async with self.store.read() as conn:
            count, oldest = (
                await conn.execute(
                    select(func.count(), func.min(jobs.c.created)).where(jobs.c.state.in_(PENDING))
                )
            ).one()
        return int(count), (float(oldest) if oldest is not None else None)

    async def purge(self, finished_before: float) -> int:
        """Forget results finished before this time (their status URLs answer 404)."""
        async with self.store.write() as conn:
            done = await conn.execute(
                delete(jobs).where(jobs.c.state.in_(FINISHED), jobs.c.updated < finished_before)
            )
        return int(done.rowcount or 0)
