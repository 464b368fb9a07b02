"""The gateway's store: one async SQLAlchemy engine over SQLite (WAL) or PostgreSQL.

Holds what the gateway itself must remember: the audit trail, revocations,
consents, idempotency keys, queued writes and the shared session budget.
Opening the store runs its migrations (alembic), under a lock so that replicas
starting together do not race. A store whose schema is the newest already opens
without alembic: a restart, and every worker but the first, skip its imports.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, event, inspect, select, update
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bridge.errors import ConfigError, Problem
from bridge.store.tables import revisions

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PgInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert

__all__ = ["SCHEMA_HEAD", "Store", "StoreUnavailable", "async_url", "migrate_ahead"]

log = logging.getLogger("bridge.store")
_MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_ID = 0x62726964  # the PostgreSQL advisory lock that serialises migrations
# The newest revision in migrations/versions (a test holds it to alembic's head).
SCHEMA_HEAD = "0004"


class StoreUnavailable(Exception):
    """The store did not answer; the message names no data."""


def async_url(url: str) -> str:
    """The URL with its async driver: sqlite -> aiosqlite, postgresql -> asyncpg."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:") :]
    for prefix in ("postgresql:", "postgres:"):
        if url.startswith(prefix):
            return "postgresql+asyncpg:" + url[len(prefix) :]
    return url


def migrate_ahead(url: str) -> subprocess.Popen[bytes] | None:
    """Start creating a new SQLite store in a process of its own; None if there is
    nothing to create (a store that exists, PostgreSQL) or it cannot start.

    A new store's migrations take ~0.2 s, most of it importing alembic; begun before
    `bridge serve` loads its mappings, they run on another core meanwhile and its own
    `Store.open` finds the schema current. Only a head start: `Store.open` still checks
    and migrates under the same lock, and reports any problem. A store that exists
    opens without alembic when it is current (`_migrate`), so a restart starts no
    process. The URL goes on stdin, not argv; `-P` keeps the working directory off
    the process's import path. A thread of this process waits for it, so that it
    leaves no zombie behind.
    """
    try:
        parsed = _store_url(url)
    except ConfigError:
        return None  # Store.open says what is wrong
    if parsed.get_backend_name() != "sqlite" or Path(str(parsed.database)).exists():
        return None
    try:
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", "bridge.store"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        assert process.stdin is not None
        process.stdin.write(url.encode() + b"\n")
        process.stdin.close()
    except OSError:
        pass  # it exited already; `Store.open` will tell why
    threading.Thread(target=process.wait, name="migrate-ahead", daemon=True).start()
    return process


def _insert_for(sqlite: bool) -> Callable[[Table], SqliteInsert | PgInsert]:
    """The dialect's INSERT, with its ON CONFLICT clauses. PostgreSQL's package loads
    every PostgreSQL driver's dialect (~30 ms of a start): only for a PostgreSQL store."""
    if sqlite:
        from sqlalchemy.dialects.sqlite import insert

        return insert
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert


def _store_url(url: str) -> URL:
    """`store.url` with its async driver, if the gateway can use it (else ConfigError)."""
    try:
        parsed = make_url(async_url(url))
    except Exception as exc:  # sqlalchemy raises ArgumentError and ValueError
        raise ConfigError(
            [Problem("settings", 1, 1, f"store.url: cannot parse it ({type(exc).__name__})")]
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            [
                Problem(
                    "settings",
                    1,
                    1,
                    f"store.url: {parsed.get_backend_name()!r} is not supported; use "
                    "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB",
                )
            ]
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            [Problem("settings", 1, 1, "store.url: SQLite needs a file: sqlite:///PATH")]
        )
    return parsed


def _revisions(connection: Connection) -> list[str]:
    """The store's schema revisions (alembic's table; none in a new store)."""
    if not inspect(connection).has_table("alembic_version"):
        return []
    rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    return [str(row[0]) for row in rows]


class Store:
    def __init__(self, engine: AsyncEngine, sqlite_path: str | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.sqlite = self.dialect == "sqlite"
        self.sqlite_path = sqlite_path
        self.insert = _insert_for(self.sqlite)

    @classmethod
    async def open(cls, url: str) -> Store:
        """Connect, migrate to the newest schema, and return the store."""
        parsed = _store_url(url)
        options: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            assert parsed.database is not None  # _store_url: SQLite has a file
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            options = {"pool_size": 10, "max_overflow": 10, "pool_pre_ping": True}
        engine = create_async_engine(parsed, **options)
        if engine.dialect.name == "sqlite":
            _sqlite_setup(engine)
        store = cls(engine, parsed.database if engine.dialect.name == "sqlite" else None)
        try:
            await store._migrate(parsed.database if store.sqlite else None)
        except ConfigError:
            await engine.dispose()
            raise
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise ConfigError(
                [
                    Problem(
                        "settings",
                        1,
                        1,
                        f"store.url: the store cannot be opened ({type(exc).__name__}); check "
                        "that the database exists and the gateway may write to it",
                    )
                ]
            ) from None
        return store

    async def _migrate(self, sqlite_path: str | None) -> None:
        def upgrade(connection: Connection) -> None:
            found = _revisions(connection)
            if found == [SCHEMA_HEAD]:
                return  # current already (one row, the newest revision)
            # Imported only when there is work: alembic loads its script templates
            # (mako), ~130 ms of a start.
            from alembic import command
            from alembic.config import Config
            from alembic.script import ScriptDirectory

            config = Config()
            config.set_main_option("script_location", str(_MIGRATIONS))
            config.attributes["connection"] = connection
            scripts = ScriptDirectory.from_config(config)
            known = {script.revision for script in scripts.walk_revisions()}
            unknown = [revision for revision in found if revision not in known]
            if unknown:
                # A newer gateway migrated it (a rollback after an upgrade, say), or
                # another application's migrations share the database.
                raise ConfigError(
                    [
                        Problem(
                            "settings",
                            1,
                            1,
                            f"store.url: the store's schema is at revision {unknown[0]!r}, "
                            f"which this gateway does not know (its newest is {SCHEMA_HEAD!r}):"
                            " a newer gateway upgraded it, or another application's migrations "
                            "use this database; run the gateway version that upgraded it, or "
                            "give the gateway a database of its own",
                        )
                    ]
                )
            command.upgrade(config, "head")

        lock = None
        if sqlite_path is not None:
            # Workers of one host start together: one migrates, the others wait.
            lock = open(sqlite_path + ".migrate-lock", "w")  # noqa: SIM115
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            async with self.engine.connect() as conn:
                if not self.sqlite:
                    await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_ID})")
                await conn.run_sync(upgrade)
                await conn.commit()
        finally:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
                lock.close()

    async def close(self) -> None:
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (SQLite: BEGIN IMMEDIATE, so concurrent workers queue)."""
        try:
            async with self.engine.connect() as conn:
                if self.sqlite:
                    conn = await conn.execution_options(sqlite_immediate=True)
                async with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"the store failed a write ({type(exc).__name__})") from None

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn, conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"the store failed a read ({type(exc).__name__})") from None

    async def ping(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.exec_driver_sql("SELECT 1")
            return True
        except StoreUnavailable:
            return False

    async def revisions(self) -> dict[str, int]:
        async with self.read() as conn:
            rows = (await conn.execute(select(revisions.c.name, revisions.c.value))).all()
        return {str(name): int(value) for name, value in rows}

    @staticmethod
    async def bump(conn: AsyncConnection, name: str) -> None:
        """Tell every replica that `name` changed (in the caller's transaction)."""
        done = await conn.execute(
            update(revisions).where(revisions.c.name == name).values(value=revisions.c.value + 1)
        )
        if done.rowcount == 0:
            await conn.execute(revisions.insert().values(name=name, value=1))


def now() -> float:
    return time.time()


def _sqlite_setup(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        # The driver's own transaction handling off: SQLAlchemy's begin event says BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers never block the writer. synchronous=NORMAL keeps every commit
        # across a crash of the process (kill -9); only an OS crash may lose the last ones.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
