"""What one audit commit costs on SQLite, and what each index of `audit_events` adds.

A read answered at one connection commits its AuditEvent alone: the event's row,
its two indexes (`id`, unique; `recorded`) and one patient link, each a page of
the WAL. This writes such commits with the appender's own statements
(`bridge/store/appender.py`) into a store made from `bridge/store/tables.py`,
and the same commits into copies of that store without the index on `id`, and
without either index, in alternating rounds, and prints the CPU per commit and
the ratio to the store as it ships. A commit of 25 events (a busy loop's shared
commit) shows the share each event pays.

    .venv/bin/python bench/audit_commit.py              # 3 rounds of 5,000 commits each
    .venv/bin/python bench/audit_commit.py -n 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine

from bridge.auditevent import _uuid7
from bridge.store.appender import _insert
from bridge.store.tables import metadata

_BODY = json.dumps({"resourceType": "AuditEvent", "text": "x" * 900})
VARIANTS = {
    "as shipped (indexes on id and recorded)": (),
    "without the unique index on id": ("UNIQUE (id)",),
    "without either index": ("UNIQUE (id)", "recorded"),
}


def _store(path: Path, without: tuple[str, ...]) -> sqlite3.Connection:
    """The store's tables, `audit_events` rebuilt without the indexes named."""
    engine = create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    engine.dispose()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    if without:
        ddl = db.execute("SELECT sql FROM sqlite_master WHERE name = 'audit_events'").fetchone()[0]
        if "UNIQUE (id)" in without:
            ddl = ddl.replace(", \n\tUNIQUE (id)", "").replace(",\n\tUNIQUE (id)", "")
            assert "UNIQUE" not in ddl, ddl
        db.execute("DROP TABLE audit_events")
        db.execute(ddl)
        if "recorded" not in without:
            db.execute("CREATE INDEX audit_events_recorded ON audit_events (recorded)")
    return db


def _rows(count: int) -> list[dict[str, object]]:
    now = time.time()
    return [
        {
            "id": _uuid7(now),
            "recorded": now,
            "client_id": "bench-app",
            "interaction": "read",
            "status": 200,
            "body": _BODY,
            "patients": ["Patient/100001"],
        }
        for _ in range(count)
    ]


def _measure(db: sqlite3.Connection, commits: int, per_commit: int) -> float:
    """CPU µs per commit, with a checkpoint every 1,000 commits counted in."""
    started = time.process_time()
    for i in range(commits):
        db.execute("BEGIN IMMEDIATE")
        error = _insert(db, _rows(per_commit))
        assert error is None, error
        if i % 1000 == 999:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    return (time.process_time() - started) / commits * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000, help="commits per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        stores = {
            name: _store(Path(tmp) / f"{i}.db", without)
            for i, (name, without) in enumerate(VARIANTS.items())
        }
        for per_commit in (1, 25):
            figures: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for _ in range(args.rounds):
                for name, db in stores.items():
                    figures[name].append(_measure(db, args.n // per_commit, per_commit))
            print(f"\n{per_commit} event(s) a commit, {args.rounds} rounds of {args.n} events")
            print("| store | CPU µs per event, each round | best | vs as shipped |")
            print("|---|---|---:|---:|")
            shipped = min(figures[next(iter(VARIANTS))])
            for name, values in figures.items():
                rounds = " / ".join(f"{v / per_commit:.1f}" for v in values)
                best = min(values) / per_commit
                print(f"| {name} | {rounds} | {best:.1f} | {min(values) / shipped:.2f}x |")
        for db in stores.values():
            db.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
