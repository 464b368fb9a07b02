"""What a lease of a legacy session costs when every session is busy.

`SessionPool` as a read uses it: `--leases` tasks (50, as the benchmark's
connections) take turns on `--sessions` sessions (4, as the EHR's mapping
allows), each lease held for one turn of the event loop. Beside it, in the
same run, the same tasks taking the same turns with no pool: the difference
is the pool's own CPU per lease, nearly all of it a wait for a session and
the hand-over when one is released.

    .venv/bin/python bench/pool.py
    .venv/bin/python bench/pool.py --source /tmp/snapshot     # another tree's pool
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def _measure(
    leases: int, sessions: int, turns: int, rounds: int
) -> list[tuple[float, float]]:
    from bridge.soap.pool import SessionPool

    pool = SessionPool(max_size=sessions, idle_timeout=300, wait_timeout=30)

    async def leasing() -> None:
        for _ in range(turns):
            session = await pool.acquire()
            await asyncio.sleep(0)
            pool.release(session)

    async def bare() -> None:
        for _ in range(turns):
            await asyncio.sleep(0)

    figures = []
    for _ in range(rounds):
        per = []
        for body in (bare, leasing):
            cpu = time.process_time()
            await asyncio.gather(*(body() for _ in range(leases)))
            per.append((time.process_time() - cpu) / (leases * turns) * 1e6)
        figures.append((per[0], per[1]))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leases", type=int, default=50, help="concurrent leases")
    parser.add_argument("--sessions", type=int, default=4, help="sessions in the pool")
    parser.add_argument("--turns", type=int, default=2_000, help="leases each task takes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--source", help="run bridge from this tree (a snapshot)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.source).resolve() if args.source else ROOT))
    import uvloop

    figures = uvloop.run(_measure(args.leases, args.sessions, args.turns, args.rounds))
    print(f"{args.leases} leases taking turns on {args.sessions} sessions, µs CPU a lease:")
    for bare, leasing in figures:
        print(f"  no pool {bare:5.2f}   pool {leasing:5.2f}   the pool's own {leasing - bare:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
