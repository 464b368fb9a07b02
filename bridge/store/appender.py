"""Appending audit rows to SQLite: in the event loop's own thread when the
database is free, else from one thread of its own.

SQLAlchemy's async SQLite driver hands every statement to a thread and back;
for the audit trail, written on every request, that costs ~1 ms of CPU per
commit. Handing rows to a thread of our own costs less (~100 µs per request
alone: two thread wake-ups and a loop wake-up), but a commit in WAL mode with
`synchronous=NORMAL` is only a few write() calls into the page cache (~15-35
µs, no fsync), so the cheapest durable path is to commit right in the event
loop: alone, a row is committed as it is handed over; while other requests
are under way, the commit waits for their rows up to `linger` (3 ms), and goes
as soon as the last of them has handed its row over.
Each request's answer waits for its commit.

The loop never waits for a lock: its connection has `busy_timeout=0`. When
another writer holds the database (a second worker, the store's own writes)
the loop tries again a little later, on a timer, for up to `handoff_after`
(5 ms: most writers hold the lock for well under a millisecond); a lock held
longer sends the batch to the appender thread, which waits for it (up to 10
s, trying every 0.5-2 ms). While that thread writes batches the loop gave it,
the loop does not compete with it for the lock: its rows wait for the
thread's commit and go in the loop's next one, or to the thread too once
`max_batch` of them wait (competing, 1 batch in 5 or 6 went to the thread
under load, each ~100 µs of thread and loop wake-ups instead of ~30 µs). The
thread also runs the WAL checkpoints, so the loop never copies pages back
into the database file, and every eighth one starts the WAL over while the
loop holds its rows (see `_checkpoint`).

Patient links go first to a table in commit order. Once the loop has committed
`merge_after` of them (1,000), it moves the pending links into the
patient-ordered table itself, 500 a transaction (~0.6 ms here), one transaction a
turn of the loop, between its commits (see `_merge_step`). Not the thread: its
transactions hold the write lock while it waits for the GIL between
statements (up to the 5 ms switch interval each while the loop is busy), and
the loop's commits would wait behind them. The thread moves them only when
it writes rows itself, and when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["SqliteAppender"]

log = logging.getLogger("bridge.store")
_EVENT = (
    "INSERT INTO audit_events (id, recorded, client_id, interaction, status, body) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
# A patient link goes first to a table appended in commit order (a search's 50
# links fill about one page); they are moved into audit_patients, sorted by patient,
# in batches (`_merge_step`): each of its pages is written once per batch, not once
# per commit. A patient's trail reads both tables (bridge/audit.py).
_LINK = "INSERT INTO audit_patients_pending (patient, event_seq, recorded) VALUES (?, ?, ?)"
_PENDING_TOP = "SELECT max(seq) FROM audit_patients_pending"
_CHUNK_TOP = "SELECT max(seq) FROM (SELECT seq FROM audit_patients_pending ORDER BY seq LIMIT ?)"
_MOVE = (
    "INSERT OR IGNORE INTO audit_patients (patient, recorded, event_seq) "
    "SELECT patient, recorded, event_seq FROM audit_patients_pending WHERE seq <= ? "
    "ORDER BY patient, recorded, event_seq"
)
_MOVED = "DELETE FROM audit_patients_pending WHERE seq <= ?"
# Pages written to the WAL by the loop's commits between two checkpoints run by the
# thread (SQLite's own automatic checkpoint comes at 1,000 pages), estimated: a few
# pages a commit (the event table and its indexes) and up to one per patient link.
_CHECKPOINT_PAGES = 1_000
_PAGES_PER_COMMIT = 4
# Every so many checkpoints, the WAL starts over (see `_checkpoint`): it stays
# within ~8,000 pages (32 MB) beyond the pages of the commits the thread has not
# caught up with.
_RESTART_EVERY = 8
_Item = tuple[list[dict[str, Any]], asyncio.AbstractEventLoop, list[asyncio.Future[None]]]
_CHECKPOINT = "checkpoint"
# Links moved in one transaction: a few milliseconds of the write lock at most,
# even into a large table (~6 ms per 1,000 links spread over 1M links); fewer, larger
# chunks write each page of audit_patients fewer times (250: ~3-5% more CPU a search).
_MERGE_CHUNK = 500
# A locked database is tried again after as long as it has been locked (1 ms at
# least: uvloop's timers count whole milliseconds, and a shorter delay fires at
# once, so the loop spun on the lock; 2 ms at most); the thread waits for it up to
# _THREAD_WAIT seconds.
_RETRY_FIRST = 0.001
_RETRY_MOST = 0.002
_THREAD_WAIT = 10.0


class SqliteAppender:
    """`append(row)` returns a future that resolves once the row is committed.

    `coming()` says whether more rows are on their way (requests under way that
    have not handed theirs over): then a commit, in the loop or by the thread,
    waits up to `linger` seconds for them, so requests served together share one
    commit instead of paying one each (a search's links to 50 patients cost ~300
    µs in a commit of their own, ~140 µs in a commit of five). With
    `inline=False` every row goes through the thread."""

    def __init__(
        self,
        path: str,
        *,
        max_batch: int = 500,
        coming: Callable[[], bool] | None = None,
        linger: float = 0.003,
        inline: bool = True,
        handoff_after: float = 0.005,
        merge_after: int = 1_000,
    ) -> None:
        self.path = path
        self.max_batch = max_batch
        self.coming = coming
        self.linger = linger
        self.inline = inline
        self.handoff_after = handoff_after
        self.merge_after = merge_after
        self._queue: queue.SimpleQueue[_Item | str | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-appender", daemon=True)
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._db: sqlite3.Connection | None = None  # the loop's own connection
        # Rows handed over in this turn of the loop, each with its request's future.
        self._rows: list[dict[str, Any]] = []
        self._futures: list[asyncio.Future[None]] = []
        self._flush_at: asyncio.TimerHandle | None = None  # the commit of the rows above
        self._since_checkpoint = 0
        self._checkpoints = 0
        self._unmerged = 0  # patient links the loop committed since it last asked for a merge
        self._merging: asyncio.Handle | None = None  # the loop's next step of a merge
        self.merges_begun = 0  # merges the loop began (tests, benchmarks)
        self.merges = 0  # merges finished, the loop's or the thread's
        self._with_thread = 0  # batches the loop gave the thread, not committed yet
        self._locked_since = 0.0  # when the loop first found the database locked, if it is
        self.handed_to_thread = 0  # batches the loop found locked too long (tests, benchmarks)
        self.retries = 0  # commits tried again because another writer held the database
        self._stopped = False
        self.commits = 0  # commits made in the loop

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)
        if self._failed is not None:
            raise self._failed
        if self.inline:
            db = sqlite3.connect(self.path, isolation_level=None)  # the loop's thread only
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=0")
            db.execute("PRAGMA wal_autocheckpoint=0")
            self._db = db

    def append(self, row: dict[str, Any]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self._db is None:
            self._hand_over([row], loop, [future])
            return future
        self._rows.append(row)
        self._futures.append(future)
        if self.coming is not None and self.coming():
            # Requests under way whose rows are not here yet may share this commit:
            # wait for them up to `linger`.
            if self._flush_at is None:
                self._flush_at = loop.call_later(self.linger, self._flush, loop)
            return future
        # Alone, or the last of them: commit now (unless the database is locked, the
        # future is settled before the request awaits it, so the answer goes out
        # without another turn of the loop).
        self._flush(loop)
        return future

    def close_inline(self) -> None:
        """In the loop: commit nothing more there; rows still pending go to the thread."""
        db, self._db = self._db, None
        if self._merging is not None:
            self._merging.cancel()  # the thread moves the pending links as it ends
            self._merging = None
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._rows:
            self._hand_over(self._rows, asyncio.get_running_loop(), self._futures)
            self._rows, self._futures = [], []
        if db is not None:
            db.close()

    def stop(self) -> None:
        """Write what is queued, then end the thread (after `close_inline`, in the loop)."""
        self._stopped = True  # a row handed over after this would never be written
        self._queue.put(None)
        self._thread.join(30)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if not self._rows:
            return
        db = self._db
        if db is None:  # stopped meanwhile: the thread writes them
            self._hand_over(self._rows, loop, self._futures)
            self._rows, self._futures = [], []
            return
        if self._with_thread:
            # The thread holds the lock or soon will: `_thread_done` flushes these,
            # or the thread takes them too once a whole batch of them waits.
            if len(self._rows) >= self.max_batch:
                self._hand_over(self._rows, loop, self._futures)
                self._rows, self._futures = [], []
            return
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if not _locked(exc):
                log.error("audit events could not be written (%s)", type(exc).__name__)
                self._locked_since = 0.0
                futures = self._futures
                self._rows, self._futures = [], []
                _settle_all(futures, exc)
            else:
                self._wait_for_lock(loop)
            return
        self._locked_since = 0.0
        rows, futures = self._rows, self._futures
        self._rows, self._futures = [], []
        error = _insert(db, rows)
        _settle_all(futures, error)
        if error is not None:
            return
        self.commits += 1
        linked = sum(len(row["patients"]) for row in rows)
        self._unmerged += linked
        if self._unmerged >= self.merge_after and self._merging is None:
            self._unmerged = 0
            self.merges_begun += 1
            self._merging = loop.call_soon(self._merge_step, loop, None)
        self._since_checkpoint += _PAGES_PER_COMMIT + linked
        if self._since_checkpoint >= _CHECKPOINT_PAGES:
            self._since_checkpoint = 0
            self._checkpoints += 1
            if self._checkpoints % _RESTART_EVERY:
                self._queue.put(_CHECKPOINT)
            else:
                # An empty batch: the thread starts the WAL over while the loop holds
                # its rows (as for any batch of the thread's), so no writer is in the way.
                self._hand_over([], loop, [])

    def _merge_step(self, loop: asyncio.AbstractEventLoop, end: int | None) -> None:
        """In the loop: move one chunk of the pending patient links, and ask for the
        next in a later turn of the loop; while another writer holds the database
        (the thread, a second worker), try again in a little while."""
        self._merging = None
        db = self._db
        if db is None:
            return  # the loop commits no more: the thread moves them as it ends
        if not self._with_thread:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                if not _locked(exc):
                    log.error("audit patient links could not be moved (%s)", type(exc).__name__)
                    return
            else:
                end, more = _move(db, end, _MERGE_CHUNK)
                if more:
                    self._merging = loop.call_soon(self._merge_step, loop, end)
                else:
                    self.merges += 1
                return
        self._merging = loop.call_later(_RETRY_MOST, self._merge_step, loop, end)

    def _wait_for_lock(self, loop: asyncio.AbstractEventLoop) -> None:
        """Another writer holds the database: try again shortly, or let the thread wait."""
        now = time.monotonic()
        if not self._locked_since:
            self._locked_since = now
        waited = now - self._locked_since
        if waited < self.handoff_after:
            self.retries += 1
            delay = min(_RETRY_MOST, max(_RETRY_FIRST, waited))
            self._flush_at = loop.call_later(delay, self._flush, loop)
            return
        # Held for long: the thread waits for it, not the loop.
        self._locked_since = 0.0
        self.handed_to_thread += 1
        self._hand_over(self._rows, loop, self._futures)
        self._rows, self._futures = [], []

    def _hand_over(
        self,
        rows: list[dict[str, Any]],
        loop: asyncio.AbstractEventLoop,
        futures: list[asyncio.Future[None]],
    ) -> None:
        if self._stopped:
            _settle_all(futures, RuntimeError("the audit appender has stopped"))
            return
        self._with_thread += 1
        self._queue.put((rows, loop, futures))

    def _thread_done(
        self,
        loop: asyncio.AbstractEventLoop,
        batches: int,
        futures: list[asyncio.Future[None]],
        error: BaseException | None,
    ) -> None:
        """In the loop: the thread wrote (or failed) `batches` of the loop's; rows held
        meanwhile go."""
        _settle_all(futures, error)
        self._with_thread -= batches
        if not self._with_thread and self._rows and self._flush_at is None:
            self._flush(loop)

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # For the checkpoints (`_checkpoint`); `_begin` waits for the write lock itself.
            db.execute("PRAGMA busy_timeout=10000")
        except sqlite3.Error as exc:
            self._failed = exc
            self._ready.set()
            return
        self._ready.set()
        stopping = False
        unmerged = 0  # links this thread wrote since its last merge
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            if isinstance(first, str):
                _checkpoint(db, restart=False)
                continue
            batch = [first]
            count = len(first[0])
            until = 0.0
            while count < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    # Only when the loop no longer commits do its rows all come here:
                    # before that, none is on its way (the loop holds them for now).
                    if self._db is not None or self.coming is None or not self.coming():
                        break
                    now = time.monotonic()
                    until = until or now + self.linger
                    if now >= until:
                        break
                    try:
                        item = self._queue.get(timeout=until - now)
                    except queue.Empty:
                        break
                if item is None:
                    stopping = True
                    break
                if isinstance(item, str):
                    continue  # a commit of this thread checkpoints on its own anyway
                batch.append(item)
                count += len(item[0])
            error: BaseException | None = None
            written = [row for rows, _, _ in batch for row in rows]
            if written:
                try:
                    _begin(db)
                except sqlite3.Error as exc:
                    log.error("audit events could not be written (%s)", type(exc).__name__)
                    error = exc
                else:
                    error = _insert(db, written)
                    if error is None:
                        unmerged += sum(len(row["patients"]) for row in written)
            if not all(rows for rows, _, _ in batch):  # the loop's call to start the WAL over
                _checkpoint(db, restart=True)
            # One wake-up of each waiting event loop per commit, not one per row.
            by_loop: dict[asyncio.AbstractEventLoop, list[list[asyncio.Future[None]]]] = {}
            for _, loop, futures in batch:
                by_loop.setdefault(loop, []).append(futures)
            for loop, handed in by_loop.items():
                settled = [future for futures in handed for future in futures]
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                    loop.call_soon_threadsafe(self._thread_done, loop, len(handed), settled, error)
            # The rows this thread wrote (the loop's when the database was locked, or
            # every row without `inline`) added enough links.
            if unmerged >= self.merge_after:
                _merge(db)
                self.merges += 1
                unmerged = 0
        _merge(db)  # nothing left pending by this process's rows (nor others' meanwhile)
        self.merges += 1
        db.close()


def _insert(db: sqlite3.Connection, rows: list[dict[str, Any]]) -> BaseException | None:
    """Insert `rows` in the transaction `db` has begun and commit; the error, if any."""
    try:
        links = []
        for row in rows:
            cursor = db.execute(
                _EVENT,
                (
                    row["id"],
                    row["recorded"],
                    row["client_id"],
                    row["interaction"],
                    row["status"],
                    row["body"],
                ),
            )
            links += [(p, cursor.lastrowid, row["recorded"]) for p in row["patients"]]
        if links:
            db.executemany(_LINK, links)
        db.execute("COMMIT")
        return None
    except Exception as exc:  # whatever it is, the transaction must not stay open
        log.error("audit events could not be written (%s)", type(exc).__name__)
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        return exc


def _merge(db: sqlite3.Connection, chunk: int = _MERGE_CHUNK) -> None:
    """In the thread: move the patient links pending now, `chunk` a transaction."""
    end: int | None = None
    more = True
    while more:
        try:
            _begin(db)
        except sqlite3.Error as exc:
            log.error("audit patient links could not be moved (%s)", type(exc).__name__)
            return
        end, more = _move(db, end, chunk)


def _move(db: sqlite3.Connection, end: int | None, chunk: int) -> tuple[int | None, bool]:
    """In the transaction `db` has begun: move the next `chunk` pending links into
    audit_patients, sorted, up to `end` (the last one pending when the merge began;
    None: now), and commit. The end, and whether links up to it are left.

    Links appended meanwhile wait for the next merge. A chunk that fails stays
    where it is, and a patient's trail still reads it."""
    try:
        if end is None:
            end = db.execute(_PENDING_TOP).fetchone()[0]
        top = db.execute(_CHUNK_TOP, (chunk,)).fetchone()[0]
        if top is not None and end is not None:
            top = min(top, end)
            db.execute(_MOVE, (top,))
            db.execute(_MOVED, (top,))
        db.execute("COMMIT")
    except Exception as exc:  # whatever it is, the transaction must not stay open
        log.error("audit patient links could not be moved (%s)", type(exc).__name__)
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        return end, False
    return end, top is not None and end is not None and top < end


def _checkpoint(db: sqlite3.Connection, *, restart: bool) -> None:
    """Copy the WAL's pages back into the database file and, with `restart`, start
    the WAL over.

    A PASSIVE checkpoint copies them without holding up any writer, but only a
    transaction that begins after a complete one starts the WAL over, and the
    loop's next commit has usually begun by then: with PASSIVE alone the WAL grew
    by every commit (700 MB in a minute of searches, each commit slower). So now
    and then the loop holds its rows while a RESTART copies the pages written
    since the last checkpoint and starts the WAL over (waiting at most 50 ms for
    other readers; if they stay, the next one tries again)."""
    with contextlib.suppress(sqlite3.Error):
        if not restart:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            return
        db.execute("PRAGMA busy_timeout=50")
        try:
            db.execute("PRAGMA wal_checkpoint(RESTART)")
        finally:
            db.execute("PRAGMA busy_timeout=10000")


def _begin(db: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, trying again every 0.5-2 ms while another writer holds the lock
    (SQLite's own busy handler sleeps up to 100 ms between tries, and the loop's rows
    may be waiting behind these)."""
    ends = time.monotonic() + _THREAD_WAIT
    pause = 0.000_5
    db.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.Error as exc:
                if not _locked(exc) or time.monotonic() >= ends:
                    raise
            time.sleep(pause)
            pause = min(_RETRY_MOST, pause * 2)
    finally:
        db.execute("PRAGMA busy_timeout=10000")


def _locked(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (extended codes too): another writer has the database."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (5, 6)


def _settle_all(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        _settle(future, error)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        from bridge.store.core import StoreUnavailable

        future.set_exception(StoreUnavailable(f"the store failed a write ({type(error).__name__})"))
