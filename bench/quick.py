"""A quick check of one served scenario: uvicorn, wrk (or the Python loader), CPU per request.

Starts the canned backend and one `bridge serve` like `make bench` does, then
measures the floor (bench/floor.py: this machine's speed) and the Patient read
(and, with --search, the page of 50) for a few seconds at each connection count.
Minutes faster than `make bench QUICK=1`, for trying a change; `make bench`
stays the reference.

    python bench/quick.py                  # floor and read at 1 and 50 connections, 4 s each
    python bench/quick.py --search --seconds 6 --workers 2 --no-floor
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench import floor, procs  # noqa: E402
from bench.drivers import Load, pick  # noqa: E402
from bench.measure import Backend, Bench, Mode  # noqa: E402
from bench.scenarios import fhir_headers  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--conns", default="1,50")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--search", action="store_true", help="also the search page of 50")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor (machine speed)")
    parser.add_argument("--profile", type=Path, help="py-spy raw file: sample the last window")
    parser.add_argument("--source", type=Path, help="run bridge from this tree (a snapshot)")
    args = parser.parse_args(argv)
    if args.source is not None:
        procs.use_source(args.source)
    from bridge.auth.devissuer import DevIssuer

    meta = json.loads((BENCH / "fixtures" / "recorded.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="bench-quick-"))
    driver = pick()
    mode = Mode(duration=args.seconds, warmup=1, profile_seconds=0, quick=True)
    bench = Bench(mode, driver, work, meta)
    conns = tuple(int(c) for c in args.conns.split(","))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)  # last: after every process has stopped
        canned = procs.Canned.start(work / "canned.log")
        stack.callback(canned.stop)
        if not args.no_floor:
            said = floor.summary(floor.measure(bench, conns))
            if said:
                print(f"    {said}", flush=True)

        def counters() -> tuple[int, int]:
            stats = canned.stats()
            return int(stats["total_calls"]), int(stats["logins"])

        backend = Backend("canned", canned.url, canned.pid, counters)
        issuer = DevIssuer(issuer="https://bench.issuer.invalid", audience="")
        key = procs.new_paging_key()
        gws = bench.start_gateways(backend, 1, issuer, key, workers=args.workers)
        stack.callback(lambda: [g.stop() for g in gws])
        issuer.audience = f"http://127.0.0.1:{gws[0].port}/fhir"
        ready = [procs.status_kb(pid, "VmRSS") / 1024 for pid in gws[0].worker_pids()]
        print(f"    RSS per worker when ready: {[round(mb, 1) for mb in ready]} MB", flush=True)
        headers = fhir_headers(issuer.mint(scope=meta["scope"], client_id="bench"))
        paths = [("read", f"/fhir/Patient/{meta['read_id']}")]
        if args.search:
            paths.append(("search", f"/fhir/Patient?{meta['search']}"))
        windows = [(n, p, c) for n, p in paths for c in conns]
        for i, (name, path, c) in enumerate(windows):
            spy = None
            if args.profile is not None and i == len(windows) - 1:
                from bench import profile

                pid = gws[0].worker_pids()[0]
                spy = profile.record(pid, max(1, args.seconds - 1), args.profile)
            load = Load([g.addr for g in gws], c, args.seconds, path=path, headers=headers)
            result = bench.measure(f"{name} w{args.workers} c{c}", load, backend, gws)
            print(f"    peak RSS per worker: {result.get('rss_peak_mb')} MB", flush=True)
            if spy is not None:
                spy.wait()
                print(profile.markdown(profile.summarize(args.profile, procs.SOURCE), name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
