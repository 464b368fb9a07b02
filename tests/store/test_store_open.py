"""Opening the store: migrations when the schema is behind, none when it is current."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from bridge.errors import ConfigError
from bridge.store import core
from bridge.store.core import SCHEMA_HEAD, Store, migrate_ahead

_OPEN = (
    "import asyncio, sys\n"
    "from bridge.store import Store\n"
    "async def main():\n"
    "    store = await Store.open(sys.argv[1])\n"
    "    await store.close()\n"
    "asyncio.run(main())\n"
    "print('alembic' in sys.modules)\n"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _versions(url: str) -> list[str]:
    async def read() -> list[str]:
        store = await Store.open(url)
        try:
            async with store.read() as conn:
                rows = await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
                return [str(row[0]) for row in rows.all()]
        finally:
            await store.close()

    return asyncio.run(read())


def test_schema_head_is_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(core.__file__).parent / "migrations"))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head == SCHEMA_HEAD, (
        f"bridge/store/core.py: SCHEMA_HEAD is {SCHEMA_HEAD!r} but the newest migration is "
        f"{head!r}; set SCHEMA_HEAD to it"
    )


def test_a_new_store_is_migrated_and_a_current_one_opens_without_alembic(
    store_url: str,
) -> None:
    def opened() -> str:
        done = subprocess.run(
            [sys.executable, "-c", _OPEN, store_url], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert opened() == "True"  # a new store: alembic made its schema
    assert _versions(store_url) == [SCHEMA_HEAD]
    assert opened() == "False"  # current already: alembic is not even imported


def test_a_store_behind_the_head_is_migrated_on_open(store_url: str) -> None:
    url = store_url
    assert _versions(url) == [SCHEMA_HEAD]

    async def step_back() -> None:
        store = await Store.open(url)
        try:
            async with store.write() as conn:
                await conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0003'")
                # what 0004 adds, so that its upgrade runs again on open as it would
                await conn.exec_driver_sql("DROP TABLE audit_patients_pending")
        finally:
            await store.close()

    asyncio.run(step_back())
    assert _versions(url) == [SCHEMA_HEAD]


def test_migrate_ahead_creates_a_new_sqlite_store_in_a_process_of_its_own(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'store.db'}"
    process = migrate_ahead(url)
    assert process is not None
    assert process.wait(timeout=60) == 0
    assert url not in " ".join(map(str, process.args))  # a password stays off argv
    assert _versions(url) == [SCHEMA_HEAD]
    assert migrate_ahead(url) is None  # it exists now: a restart starts no process


def test_migrate_ahead_starts_nothing_for_postgresql(postgres_url: str) -> None:
    assert migrate_ahead(postgres_url) is None  # the store may exist: Store.open checks


def test_migrate_ahead_does_not_import_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A `bridge` package where `bridge serve` happens to start must not get the URL.
    planted = tmp_path / "cwd" / "bridge" / "store"
    planted.mkdir(parents=True)
    marker = tmp_path / "planted-ran"
    for folder in (planted.parent, planted):
        (folder / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (planted / "__main__.py").write_text("")
    monkeypatch.chdir(tmp_path / "cwd")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    process = migrate_ahead(url)
    assert process is not None
    assert process.wait(timeout=60) == 0
    assert not marker.exists()
    assert _versions(url) == [SCHEMA_HEAD]


def test_migrate_ahead_exits_1_on_a_store_it_cannot_open(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    process = migrate_ahead(f"sqlite:///{tmp_path / 'file' / 'store.db'}")  # under a file
    assert process is not None
    assert process.wait(timeout=60) == 1


def test_the_store_process_reads_the_url_as_utf8_whatever_the_locale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.store.__main__ import main

    url = f"sqlite:///{tmp_path / 'störe' / 'store.db'}"
    stdin = io.TextIOWrapper(io.BytesIO(url.encode() + b"\n"), encoding="ascii")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main() == 0
    assert _versions(url) == [SCHEMA_HEAD]


def test_a_store_a_newer_gateway_upgraded_is_refused_with_both_revisions(store_url: str) -> None:
    async def step_ahead() -> None:
        store = await Store.open(store_url)
        try:
            async with store.write() as conn:
                await conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
        finally:
            await store.close()

    asyncio.run(step_ahead())
    with pytest.raises(ConfigError) as caught:
        asyncio.run(Store.open(store_url))
    assert str(caught.value) == (
        "settings:1:1: store.url: the store's schema is at revision '0099', which this gateway "
        f"does not know (its newest is '{SCHEMA_HEAD}'): a newer gateway upgraded it, or another "
        "application's migrations use this database; run the gateway version that upgraded it, "
        "or give the gateway a database of its own"
    )
