"""Audit rows: committed in the event loop, by the appender thread when the
database is locked, and the schema's upgrade that keys patient links by time."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bridge.store import Store
from bridge.store.appender import SqliteAppender
from bridge.store.core import StoreUnavailable


def _row(n: int, patients: list[str]) -> dict[str, Any]:
    return {
        "id": f"event-{n}",
        "recorded": 1_700_000_000.0 + n,
        "client_id": "app",
        "interaction": "read",
        "status": 200,
        "body": "{}",
        "patients": patients,
    }


async def _open(tmp_path: Path) -> str:
    path = tmp_path / "store.db"
    store = await Store.open(f"sqlite:///{path}")
    await store.close()
    return str(path)


def _links(path: str) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT e.id, p.patient FROM audit_patients p "
            "JOIN audit_events e ON e.seq = p.event_seq ORDER BY e.id, p.patient"
        ).fetchall()


async def _stop(appender: SqliteAppender) -> None:
    appender.close_inline()
    await asyncio.to_thread(appender.stop)


async def _first_row_with_the_thread(
    path: str, **options: Any
) -> tuple[SqliteAppender, sqlite3.Connection, asyncio.Future[None]]:
    """An appender whose first row met a lock held too long and went to the thread,
    which waits for it: the other writer's connection holds the lock until COMMIT."""
    appender = SqliteAppender(path, handoff_after=0.001, **options)
    appender.start()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    first = appender.append(_row(1, ["P1"]))

    async def handed() -> None:
        while appender.handed_to_thread == 0:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(handed(), 5)
    return appender, other, first


def test_rows_are_committed_in_the_loop_as_they_are_handed_over(tmp_path: Path) -> None:
    async def main() -> tuple[str, SqliteAppender]:
        path = await _open(tmp_path)
        appender = SqliteAppender(path)
        appender.start()
        try:
            await asyncio.gather(*(appender.append(_row(n, [f"P{n}", "P0"])) for n in range(1, 21)))
        finally:
            await _stop(appender)
        return path, appender

    path, appender = asyncio.run(main())
    assert appender.handed_to_thread == 0
    assert appender.commits == 20  # nobody else under way: nothing to wait for
    links = _links(path)
    assert len(links) == 40
    assert ("event-7", "P7") in links and ("event-7", "P0") in links


def test_a_commit_waits_for_requests_under_way_but_not_past_the_last_of_them(
    tmp_path: Path,
) -> None:
    under_way = [2]

    async def main() -> tuple[SqliteAppender, float]:
        path = await _open(tmp_path)
        appender = SqliteAppender(path, coming=lambda: under_way[0] > 0, linger=5.0)
        appender.start()
        try:
            under_way[0] -= 1
            first = appender.append(_row(1, ["P1"]))
            await asyncio.sleep(0.05)
            assert not first.done()  # another request is still on its way
            started = time.monotonic()
            under_way[0] -= 1
            await asyncio.gather(first, appender.append(_row(2, ["P2"])))
            waited = time.monotonic() - started
        finally:
            await _stop(appender)
        return appender, waited

    appender, waited = asyncio.run(main())
    assert appender.commits == 1
    assert waited < 1.0  # not the 5 s linger: the last row was there


def test_a_locked_database_sends_the_rows_to_the_thread_which_waits_for_the_lock(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[str, SqliteAppender, float]:
        path = await _open(tmp_path)
        appender = SqliteAppender(path)
        appender.start()
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another worker's write in progress
        threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
        started = time.monotonic()
        try:
            pending = appender.append(_row(1, ["P1"]))
            # The loop is not blocked while the thread waits for the lock.
            await asyncio.sleep(0.05)
            assert not pending.done()
            await pending
        finally:
            await _stop(appender)
            other.close()
        return path, appender, time.monotonic() - started

    path, appender, waited = asyncio.run(main())
    assert appender.handed_to_thread == 1
    assert waited >= 0.25
    assert _links(path) == [("event-1", "P1")]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_lock_held_briefly_is_waited_out_in_the_loop(tmp_path: Path, loop: str) -> None:
    async def main() -> tuple[str, SqliteAppender]:
        path = await _open(tmp_path)
        appender = SqliteAppender(path, handoff_after=5.0)
        appender.start()
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another writer, done in a moment
        try:
            pending = appender.append(_row(1, ["P1"]))
            asyncio.get_running_loop().call_later(0.02, other.execute, "COMMIT")
            await pending
        finally:
            await _stop(appender)
            other.close()
        return path, appender

    if loop == "uvloop":
        import uvloop

        path, appender = uvloop.run(main())
    else:
        path, appender = asyncio.run(main())
    # Tried again every 1-2 ms: uvloop runs a timer of less than 0.5 ms at once,
    # and a first delay of 0.25 ms had the loop spinning on the lock.
    assert 1 <= appender.retries <= 20
    assert appender.handed_to_thread == 0  # no thread wake-ups for a lock of 20 ms
    assert appender.commits == 1
    assert _links(path) == [("event-1", "P1")]


def test_rows_arriving_while_the_thread_writes_wait_for_it_instead_of_competing(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[str, SqliteAppender]:
        path = await _open(tmp_path)
        appender, other, first = await _first_row_with_the_thread(path)
        try:
            tried = appender.retries
            second = appender.append(_row(2, ["P2"]))
            third = appender.append(_row(3, ["P3"]))
            await asyncio.sleep(0.05)
            # They wait for the thread's commit; the loop does not knock on the lock meanwhile.
            assert not second.done() and not third.done()
            assert appender.retries == tried
            other.execute("COMMIT")  # the other writer is done: the thread goes, then the loop
            await asyncio.wait_for(asyncio.gather(first, second, third), 10)
        finally:
            await _stop(appender)
            other.close()
        return path, appender

    path, appender = asyncio.run(main())
    assert appender.handed_to_thread == 1  # only the row that met the long lock
    assert appender.commits == 1  # the two that came meanwhile: one commit in the loop
    assert _links(path) == [("event-1", "P1"), ("event-2", "P2"), ("event-3", "P3")]


def test_a_row_that_cannot_be_written_fails_its_request_not_the_next(tmp_path: Path) -> None:
    async def main() -> tuple[BaseException | None, str]:
        path = await _open(tmp_path)
        appender = SqliteAppender(path)
        appender.start()
        try:
            first = _row(1, ["P1"])
            await appender.append(first)
            caught: BaseException | None = None
            try:
                await appender.append(_row(1, ["P2"]))  # the same event id again
            except StoreUnavailable as exc:
                caught = exc
            await appender.append(_row(2, ["P2"]))
        finally:
            await _stop(appender)
        return caught, path

    caught, path = asyncio.run(main())
    assert isinstance(caught, StoreUnavailable)
    assert "IntegrityError" in str(caught) and "P2" not in str(caught)
    assert _links(path) == [("event-1", "P1"), ("event-2", "P2")]


def test_rows_sharing_a_commit_fail_together_and_the_database_stays_writable(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[list[BaseException | None], str]:
        path = await _open(tmp_path)
        under_way = [1]
        appender = SqliteAppender(path, coming=lambda: under_way[0] > 0)
        appender.start()
        try:
            broken = _row(2, ["P2"])
            del broken["body"]  # a row the trail could never hand over: not an sqlite error
            first = appender.append(_row(1, ["P1"]))  # waits for the one under way
            under_way[0] = 0
            results = await asyncio.gather(first, appender.append(broken), return_exceptions=True)
            await appender.append(_row(3, ["P3"]))  # in the loop again: no transaction left open
        finally:
            await _stop(appender)
        return [r if isinstance(r, BaseException) else None for r in results], path

    results, path = asyncio.run(main())
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert _links(path) == [("event-3", "P3")]


def test_a_database_that_cannot_begin_fails_the_request_instead_of_leaving_it_waiting(
    tmp_path: Path,
) -> None:
    async def main() -> BaseException | None:
        path = await _open(tmp_path)
        appender = SqliteAppender(path)
        appender.start()
        assert appender._db is not None
        appender._db.close()  # as a corrupt or vanished file would: not "locked"
        try:
            await asyncio.wait_for(appender.append(_row(1, ["P1"])), 5)
        except StoreUnavailable as exc:
            return exc
        finally:
            appender._db = None
            await asyncio.to_thread(appender.stop)
        return None

    caught = asyncio.run(main())
    assert isinstance(caught, StoreUnavailable)
    assert "ProgrammingError" in str(caught)  # the closed connection's error, not a hang


def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _migrate(direction: str, revision: str) -> Any:
    """For `run_sync`: alembic's upgrade or downgrade to `revision` on that connection."""
    from alembic import command
    from alembic.config import Config

    from bridge.store.core import _MIGRATIONS

    def run(connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)

    return run


async def _one_event_with_links(conn: Any, table: str) -> None:
    """Event 1, linked to P1 and P2 in `table` (as an older schema or the appender left it)."""
    await conn.execute(
        text(
            "INSERT INTO audit_events (id, recorded, interaction, status, body) "
            "VALUES ('e1', 10.0, 'search-type', 200, '{}')"
        )
    )
    await conn.execute(
        text(
            f"INSERT INTO {table} (patient, event_seq, recorded) "
            "VALUES ('P1', 1, 10.0), ('P2', 1, 10.0)"
        )
    )


async def _links_in_order(conn: Any) -> list[Any]:
    query = "SELECT patient, event_seq, recorded FROM audit_patients ORDER BY patient"
    return list((await conn.execute(text(query))).all())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_upgrade_keeps_every_patient_link(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from bridge.store.core import async_url

    url = _url(backend, tmp_path, request)

    async def main() -> list[Any]:
        engine = create_async_engine(async_url(url))
        async with engine.begin() as conn:
            await conn.run_sync(_migrate("upgrade", "0002"))
            await _one_event_with_links(conn, "audit_patients")
        async with engine.begin() as conn:
            await conn.run_sync(_migrate("upgrade", "head"))
        async with engine.connect() as conn:
            rows = await _links_in_order(conn)
            if backend == "postgresql":  # named as a fresh table would be
                names = (
                    await conn.execute(
                        text(
                            "SELECT conname FROM pg_constraint "
                            "WHERE conrelid = 'audit_patients'::regclass"
                        )
                    )
                ).all()
                assert [n[0] for n in names] == ["audit_patients_pkey"]
        await engine.dispose()
        store = await Store.open(url)  # already at the newest schema: nothing to do
        await store.close()
        return [tuple(r) for r in rows]

    assert asyncio.run(main()) == [("P1", 1, 10.0), ("P2", 1, 10.0)]


def test_the_trail_commits_with_the_group_commit_it_is_given(tmp_path: Path) -> None:
    from bridge.audit import AuditTrail

    async def main() -> float:
        store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        trail = AuditTrail(store, group_commit=0.02)
        trail.start()
        try:
            assert trail._appender is not None
            return trail._appender.linger
        finally:
            await trail.close()
            await store.close()

    assert asyncio.run(main()) == 0.02


def test_a_whole_batch_held_behind_the_thread_goes_to_the_thread_too(tmp_path: Path) -> None:
    async def main() -> tuple[str, SqliteAppender]:
        path = await _open(tmp_path)
        appender, other, first = await _first_row_with_the_thread(path, max_batch=2)
        try:
            # Not held in the loop without bound while the thread waits for the lock.
            rest = [appender.append(_row(n, [f"P{n}"])) for n in (2, 3)]
            assert appender._rows == []
            other.execute("COMMIT")
            await asyncio.wait_for(asyncio.gather(first, *rest), 10)
        finally:
            await _stop(appender)
            other.close()
        return path, appender

    path, appender = asyncio.run(main())
    assert appender.commits == 0  # all three written by the thread
    assert _links(path) == [("event-1", "P1"), ("event-2", "P2"), ("event-3", "P3")]


def test_a_row_handed_over_after_the_appender_stopped_fails_at_once(tmp_path: Path) -> None:
    async def main() -> BaseException | None:
        path = await _open(tmp_path)
        appender = SqliteAppender(path)
        appender.start()
        await _stop(appender)
        try:
            await asyncio.wait_for(appender.append(_row(1, ["P1"])), 5)
        except StoreUnavailable as exc:
            return exc
        return None

    assert isinstance(asyncio.run(main()), StoreUnavailable)


def test_the_wal_starts_over_now_and_then_instead_of_growing_with_every_commit(
    tmp_path: Path,
) -> None:
    # One search's AuditEvent links to 50 patients: ~54 pages a commit. Checkpoints
    # that only copy pages back leave the WAL file growing by all of them.
    async def main() -> int:
        path = await _open(tmp_path)
        appender = SqliteAppender(path)
        appender.start()
        wal = Path(path + "-wal")
        largest = 0
        try:
            for n in range(1500):
                patients = [f"P{(n * 50 + k) * 7919 % 100_003}" for k in range(50)]
                await appender.append(_row(n, patients))
                largest = max(largest, wal.stat().st_size if wal.exists() else 0)
        finally:
            await _stop(appender)
        return largest

    largest = asyncio.run(main())
    # 1,500 commits of ~54 pages of 4 KiB are ~300 MB of WAL without a restart.
    assert 0 < largest < 100 * 1024 * 1024


def _pending(path: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM audit_patients_pending").fetchone()[0])


def test_links_wait_in_commit_order_and_move_in_batches_once_enough_are_pending(
    tmp_path: Path,
) -> None:
    # Two appenders on one file, as two workers: each asks for a merge after 100 of its
    # own links; a merge moves every pending link, whichever process wrote it.
    async def main() -> tuple[str, list[int]]:
        path = await _open(tmp_path)
        first, second = SqliteAppender(path, merge_after=100), SqliteAppender(path, merge_after=100)
        first.start()
        second.start()
        pending = []
        try:
            for n in range(1, 13):
                appender = first if n % 2 else second
                await appender.append(_row(n, [f"P{n}-{k}" for k in range(30)]))
                while appender.merges < appender.merges_begun:  # the loop's, if begun
                    await asyncio.sleep(0.005)
                pending.append(_pending(path))
        finally:
            await _stop(first)
            await _stop(second)
        return path, pending

    path, pending = asyncio.run(main())
    # Committed with their events, not yet moved; moved when one appender has
    # committed 100 of its own (its 4th row: the 7th, and the 8th for the other).
    assert pending == [30, 60, 90, 120, 150, 180, 0, 0, 30, 60, 90, 120]
    assert _pending(path) == 0  # the last are moved when the appenders stop
    links = _links(path)
    assert len(links) == 12 * 30 == len(set(links))
    assert ("event-7", "P7-29") in links


def test_a_patients_trail_reads_the_links_not_moved_yet(tmp_path: Path) -> None:
    from bridge.audit import AuditTrail

    def row(n: int, patients: list[str]) -> dict[str, Any]:
        return {**_row(n, patients), "body": f'{{"resourceType": "AuditEvent", "id": "event-{n}"}}'}

    async def main() -> tuple[list[str], list[str], list[str], int]:
        store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        trail = AuditTrail(store)
        trail.start()
        try:
            for n, patients in enumerate((["P1", "P2"], ["P2"], ["P1"], ["P3"]), start=1):
                await trail.record(row(n, patients))

            async def ids(patient: str, **period: float) -> list[str]:
                found = await trail.search(
                    patient=patient,
                    since=period.get("since"),
                    until=period.get("until"),
                    count=10,
                    before=None,
                )
                return [event["id"] for _, event in found]

            pending = _pending(str(tmp_path / "store.db"))
            before = await ids("P1")
            in_period = await ids("P2", since=1_700_000_002.0, until=1_700_000_003.0)
        finally:
            await trail.close()
        after = await ids("P1")  # the store is still open: now from audit_patients
        await store.close()
        return before, in_period, after, pending

    before, in_period, after, pending = asyncio.run(main())
    assert pending == 5
    assert before == after == ["event-3", "event-1"]  # newest first
    assert in_period == ["event-2"]
    assert _pending(str(tmp_path / "store.db")) == 0


def test_links_move_a_chunk_per_transaction_and_a_trail_reads_across_both_tables(
    tmp_path: Path,
) -> None:
    from bridge.audit import AuditTrail
    from bridge.store.appender import _merge

    path = str(tmp_path / "store.db")

    def row(n: int) -> dict[str, Any]:
        body = f'{{"resourceType": "AuditEvent", "id": "event-{n}"}}'
        return {**_row(n, ["P1", f"Q{n}"]), "body": body}

    async def main() -> list[list[str]]:
        store = await Store.open(f"sqlite:///{path}")
        trail = AuditTrail(store)
        trail.start()
        pages = []
        try:
            for n in range(1, 6):
                await trail.record(row(n))
            db = sqlite3.connect(path, isolation_level=None)
            db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
            _merge(db, chunk=3)  # 10 links: 3 + 3 + 3 + 1
            db.close()
            assert _pending(path) == 0
            for n in range(6, 9):
                await trail.record(row(n))
            before = None
            while True:  # P1's trail, two at a time, newest first
                found = await trail.search(
                    patient="P1", since=None, until=None, count=2, before=before
                )
                if not found:
                    break
                pages.append([event["id"] for _, event in found])
                before = found[-1][0]
        finally:
            await trail.close()
            await store.close()
        return pages

    commits: list[str] = []
    pages = asyncio.run(main())
    assert len(commits) == 4
    assert pages == [
        ["event-8", "event-7"],
        ["event-6", "event-5"],  # the newest pending, then the newest moved
        ["event-4", "event-3"],
        ["event-2", "event-1"],
    ]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_downgrade_keeps_the_links_not_moved_yet(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from bridge.store.core import async_url

    url = _url(backend, tmp_path, request)

    async def main() -> list[Any]:
        store = await Store.open(url)
        await store.close()
        engine = create_async_engine(async_url(url))
        async with engine.begin() as conn:
            await _one_event_with_links(conn, "audit_patients_pending")
            await conn.run_sync(_migrate("downgrade", "0003"))
        async with engine.connect() as conn:
            rows = await _links_in_order(conn)
        await engine.dispose()
        store = await Store.open(url)  # and up again
        await store.close()
        return [tuple(r) for r in rows]

    assert asyncio.run(main()) == [("P1", 1, 10.0), ("P2", 1, 10.0)]
