"""Start-up compared: process start to ready, this checkout against a snapshot, in turns.

Each start is a `bridge serve` as `make bench` starts it (every mapping of the tree's
mappings/, a new store, the tree's own WSDL cache, warm after its first start), timed
to the first /readyz that lists every resource. The two trees start in turn, so that a
host whose speed drifts (10-40% within minutes on a shared VM) slows both alike; the
pairwise ratio is the figure to read. Also the gateway process's own CPU at ready.

    git archive HEAD | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    python bench/startup.py --source /tmp/base --starts 12
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench import procs  # noqa: E402


def _start(tree: Path, run_dir: Path, endpoint: str, issuer: object) -> tuple[float, float]:
    """(seconds to ready, CPU seconds of the gateway process by then) of one start."""
    procs.SOURCE = tree  # the gateway's working directory and its mappings/
    os.environ["PYTHONPATH"] = str(tree)  # and what its own helper processes import
    gateway = procs.start_gateway(
        run_dir,
        endpoint,
        base_url=None,
        issuer=issuer.issuer,  # type: ignore[attr-defined]
        jwks=issuer.jwks(),  # type: ignore[attr-defined]
        paging_key=procs.new_paging_key(),
    )
    try:
        return gateway.ready_seconds, procs.cpu_seconds(gateway.process.pid)
    finally:
        gateway.stop()


def _describe(name: str, runs: list[tuple[float, float]]) -> str:
    ready = [r for r, _ in runs]
    cpu = [c for _, c in runs]
    return (
        f"{name:<10} ready median {statistics.median(ready):.3f} s "
        f"({min(ready):.3f}-{max(ready):.3f}), CPU at ready median {statistics.median(cpu):.3f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="the snapshot to compare")
    parser.add_argument("--starts", type=int, default=10, help="timed starts of each tree")
    args = parser.parse_args(argv)
    base = args.source.resolve()
    if not (base / "bridge" / "__init__.py").is_file():
        raise SystemExit(f"--source {args.source}: no bridge/ package there")
    from bridge.auth.devissuer import DevIssuer

    issuer = DevIssuer(issuer="https://bench.issuer.invalid", audience="")
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    trees = {"snapshot": base, "checkout": procs.ROOT}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        canned = procs.Canned.start(work / "canned.log")
        stack.callback(canned.stop)
        dirs = {name: work / name for name in trees}
        for name, tree in trees.items():  # each tree's first start fills its WSDL cache
            dirs[name].mkdir()
            _start(tree, dirs[name], canned.url, issuer)
        for i in range(args.starts):
            for name, tree in trees.items():
                runs[name].append(_start(tree, dirs[name], canned.url, issuer))
            pair = f"{runs['snapshot'][-1][0]:.3f} / {runs['checkout'][-1][0]:.3f} s"
            print(f"  start {i + 1}: snapshot / checkout {pair}", flush=True)
    for name in trees:
        print(_describe(name, runs[name]))
    ratios = [c[0] / s[0] for s, c in zip(runs["snapshot"], runs["checkout"], strict=True)]
    print(f"checkout / snapshot, pair by pair: median {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
