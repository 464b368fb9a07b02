"""`make bench`: the gateway against a canned SOAP backend and the real mock, each
figure beside the direct SOAP call to the same backend, measured in the same run,
with the machine's floor (a trivial Starlette app on uvicorn, bench/floor.py).

    .venv/bin/python bench/run.py            # full: 8 s windows, ~9 minutes
    .venv/bin/python bench/run.py --quick    # 2 s windows, ~2.5 minutes

Writes bench/results/latest.md and latest.json (and logs, profiles) and, after a
full run, the latest table in bench/README.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import floor, procs, profile, report, wakeup
from bench.drivers import Load, Python, Wrk, pick
from bench.measure import FULL, QUICK, Backend, Bench
from bench.scenarios import (
    fhir_headers,
    login_direct,
    logout_direct,
    run_scenarios,
    writes_recorded,
)

FIXTURES = procs.BENCH / "fixtures"
RESULTS = procs.BENCH / "results"


def run_profile(
    bench: Bench, gateway: procs.Gateway, load: Load, name: str, driver: Wrk | Python
) -> None:
    seconds = bench.mode.profile_seconds
    raw = RESULTS / f"profile-{name}.raw"
    spy = profile.record(gateway.pid, seconds, raw)
    time.sleep(0.3)
    driver.run(replace(load, duration=seconds + 1), bench.work, f"profile-{name}")
    _, err = spy.communicate(timeout=60)
    if spy.returncode != 0 or not raw.exists():
        bench.log(f"  py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-500:]}")
        bench.profiles[name] = {"error": err.decode(errors="replace")[-500:]}
        return
    summary = profile.summarize(raw, procs.SOURCE)
    summary["command"] = profile.command(str(gateway.pid), seconds, f"bench/results/{raw.name}")
    summary["load"] = f"{load.connections} connections, {driver.name}"
    summary["raw"] = str(raw.relative_to(procs.ROOT))
    bench.profiles[name] = summary
    top = ", ".join(f"{r['name']} {r['share']}%" for r in summary["self_areas"][:5])
    bench.log(f"  profile {name}: {top}")


def run_floor(bench: Bench, result: dict[str, Any], *, again: bool = False) -> None:
    """The floor at 1 and 50 connections into `result["floor"]`, or why it failed; `again`:
    at 50 connections once more (`c50_end`), after the gateway's canned scenarios, to see
    whether the machine's speed drifted meanwhile."""
    if again:
        if result.get("floor"):
            print("floor again, after the canned scenarios")
            with contextlib.suppress(Exception):  # the first floor still stands
                result["floor"]["c50_end"] = floor.measure(bench, (50,))["c50"]
        return
    print("floor: a trivial Starlette app on uvicorn, served as the gateway is")
    try:
        result["floor"] = floor.measure(bench, (1, 50))
    except Exception as exc:  # the gateway's figures still deserve a report
        result["floor_error"] = f"{type(exc).__name__}: {exc}"[:2000]
        print(f"  the floor failed: {result['floor_error']}")
        return
    print(f"  {floor.summary(result['floor']) or 'no floor at 50 connections: no speed factor'}")
    # What a wake-up across cores costs here: a separate process, as it forks.
    with contextlib.suppress(Exception):  # context for the figures, never a reason to stop
        done = subprocess.run(
            [sys.executable, str(procs.BENCH / "wakeup.py"), "--json", "-n", "5000"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        result["wakeup"] = json.loads(done.stdout)
        print(f"  {wakeup.summary(result['wakeup']) or result['wakeup']}")


def run_mock(bench: Bench, stack: contextlib.ExitStack, issuer: Any, key: str) -> None:
    from bridge.mock.hospital import MockHospital

    meta = bench.meta
    hospital = stack.enter_context(MockHospital.start())
    process = getattr(hospital, "_process", None)

    def mock_counters() -> tuple[int, int]:
        ehr = hospital.stats()["ehr"]
        return sum(ehr["calls"].values()), int(ehr["logins"])

    mb = Backend("mock", hospital.ehr_url, process.pid if process else None, mock_counters)
    login_direct(mb, meta, 4)
    stack.callback(logout_direct, mb, meta)
    gwm = bench.start_gateways(mb, 1, issuer, key)
    stack.callback(lambda: [g.stop() for g in gwm])
    issuer.audience = f"http://127.0.0.1:{gwm[0].port}/fhir"
    token = issuer.mint(scope=meta.get("scope", "user/*.read"), client_id="bench")
    writes = writes_recorded(procs.systems_config("http://x")[1])
    # Quick runs keep the mock to 50 connections: the spyne mock is slow at everything.
    conns = (50,) if bench.mode.quick else (1, 50)
    run_scenarios(bench, mb, gwm, token, conns, writes=writes)
    for g in gwm:
        g.stop()
    logout_direct(mb, meta)


# -- start-up ---------------------------------------------------------------------


def import_cost() -> dict[str, Any]:
    """`python -X importtime -c "import bridge.app"`: total and the heaviest packages."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import bridge.app"],
        capture_output=True,
        text=True,
        cwd=procs.SOURCE,
        check=True,
    )
    total = 0
    packages: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)", line)
        if not m:
            continue
        total += int(m.group(1))
        name = m.group(3)
        # Top-level packages, wherever they are first imported: where the time goes.
        if "." not in name and not name.startswith(("_", "site", "encodings", "bridge")):
            packages[name] = max(packages.get(name, 0), int(m.group(2)))
    top = sorted(((us, name) for name, us in packages.items()), reverse=True)

    def wall(code: str) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=procs.SOURCE, check=True)
            best = min(best, time.perf_counter() - started)
        return best

    bare = wall("pass")
    with_app = wall("import bridge.app")
    return {
        "importtime_total_ms": round(total / 1000, 1),
        "heaviest": [
            {"module": name, "cumulative_ms": round(us / 1000, 1)} for us, name in top[:8]
        ],
        "wall_ms": round(with_app * 1000, 1),
        "wall_minus_bare_python_ms": round((with_app - bare) * 1000, 1),
    }


# -- main ---------------------------------------------------------------------------


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(procs.ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def _snapshot_head() -> Path:
    """The committed bridge/, mappings/ and wsdl/ of HEAD, in a temporary folder.

    For measuring what is committed while the checkout is mid-edit; `git archive`
    only reads the repository.
    """
    import atexit
    import io
    import tarfile

    commit = _git("rev-parse", "--short", "HEAD")
    folders = ("bridge", "mappings", "wsdl")
    archive = subprocess.run(
        ["git", "-C", str(procs.ROOT), "archive", "--format=tar", "HEAD", *folders],
        capture_output=True,
        check=True,
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="bench-head-"))
    atexit.register(shutil.rmtree, folder, True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        try:
            tar.extractall(folder, filter="data")
        except TypeError:  # Python before 3.11.4: no filters; the archive is our own
            tar.extractall(folder)
    (folder / "SNAPSHOT").write_text(f"HEAD {commit}\n")
    return folder


def _source_info() -> dict[str, Any]:
    info: dict[str, Any] = {"source": str(procs.SOURCE)}
    snapshot = procs.SOURCE / "SNAPSHOT"
    if procs.SOURCE != procs.ROOT:
        if snapshot.exists():
            info["source"] = f"snapshot of {snapshot.read_text().strip()}"
        return info
    try:
        info["source"] = "this checkout"
        info["commit"] = _git("rev-parse", "--short", "HEAD")
        info["checkout_dirty"] = bool(_git("status", "--porcelain", "--", "bridge", "mappings"))
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _logs_dir() -> Path:
    """bench/results/logs, emptied: configs, gateway logs, load scripts of this run."""
    path = RESULTS / "logs"
    if path.is_dir():
        for old in path.iterdir():
            if old.is_dir():
                shutil.rmtree(old)  # the WSDL cache: the run's first gateway starts cold
            else:
                old.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s windows (~2.5 minutes)")
    parser.add_argument(
        "--loader",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk if installed (auto), or the Python loader",
    )
    parser.add_argument("--source", type=Path, help="run bridge from this tree (a snapshot)")
    parser.add_argument(
        "--head",
        action="store_true",
        help="run bridge from a snapshot of the committed HEAD (when the checkout is mid-edit)",
    )
    parser.add_argument("--skip-mock", action="store_true", help="only the canned backend")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-readme", action="store_true", help="leave bench/README.md alone")
    args = parser.parse_args(argv)

    if args.head:
        args.source = _snapshot_head()
    if args.source is not None:
        procs.use_source(args.source)
    from bridge.auth.devissuer import DevIssuer

    mode = QUICK if args.quick else FULL
    if args.loader == "wrk" and not Wrk.available():
        print("--loader wrk: wrk is not installed", file=sys.stderr)
        return 2
    driver = pick(force_python=args.loader == "python")
    if driver.name == "wrk":
        print("load generator: wrk (searches, walks and batches: bench/loader.py)")
    else:
        print(
            "load generator: bench/loader.py (Python, uvloop) - wrk is not installed; "
            "figures are bounded by the loader on this machine"
        )
    meta = json.loads((FIXTURES / "recorded.json").read_text())
    RESULTS.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if mode.quick else "full",
        "window_s": mode.duration,
        "warmup_s": mode.warmup,
        "machine": procs.machine(),
        "load_generator": driver.name,
        **_source_info(),
        "fixtures": {k: meta[k] for k in ("recorded", "read_id", "search", "search_total")},
    }
    print(
        f"machine: {result['machine']['cores']} cores, {result['machine']['cpu']}, "
        f"Python {result['machine']['python']} ({result['machine']['python_build']}); "
        f"windows {mode.duration} s "
        f"(+{mode.warmup} s warm-up)"
    )

    busy = procs.busy_processes()
    result["busy_before"] = [{"cores": round(c, 2), "pid": p, "cmd": cmd} for c, p, cmd in busy]
    if busy and sum(c for c, _, _ in busy) > 0.2:
        print("warning: the machine is not idle; these processes use CPU now:")
        for cores, pid, cmd in busy:
            print(f"  {cores:.2f} cores  pid {pid}  {cmd}")

    with contextlib.ExitStack() as stack:
        work = _logs_dir()
        bench = Bench(mode, driver, work, meta)
        print("start-up: import cost")
        result["import"] = import_cost()
        print(f"  {result['import']}")

        issuer = DevIssuer(issuer="https://bench.issuer.invalid", audience="")
        key = procs.new_paging_key()

        # -- the canned backend ------------------------------------------------------
        canned = procs.Canned.start(work / "canned.log")
        stack.callback(canned.stop)

        def canned_counters() -> tuple[int, int]:
            stats = canned.stats()
            return int(stats["total_calls"]), int(stats["logins"])

        cb = Backend("canned", canned.url, canned.pid, canned_counters)
        print(f"canned backend at {canned.url} (pid {canned.pid})")
        run_floor(bench, result)
        gws = bench.start_gateways(cb, 1, issuer, key)
        stack.callback(lambda: [g.stop() for g in gws])
        issuer.audience = f"http://127.0.0.1:{gws[0].port}/fhir"
        token = issuer.mint(scope=meta.get("scope", "user/*.read"), client_id="bench")
        writes = writes_recorded(procs.systems_config("http://x")[1])
        print("canned backend, 1 worker")
        run_scenarios(
            bench, cb, gws, token, (1, 50), reused_page=True, writes=writes, page_beside_walk=True
        )
        if not args.no_profile:
            if profile.py_spy() is None:
                print("  py-spy is not installed: no profile (make bench installs it)")
            else:
                print("profile (py-spy) during the read scenario, 50 connections")
                read = Load(
                    [gws[0].addr],
                    50,
                    mode.profile_seconds,
                    path=f"/fhir/Patient/{meta['read_id']}",
                    headers=fhir_headers(token),
                )
                run_profile(bench, gws[0], read, "read", driver)
                if not mode.quick:
                    search = replace(read, path=f"/fhir/Patient?{meta['search']}")
                    run_profile(bench, gws[0], search, "search", bench.loader)

        # Two workers: `bridge serve` with workers: 2 when it has them (one port, the
        # kernel spreads connections), else two gateway processes on two ports with
        # the load generator's connections split evenly between them.
        for g in gws:
            g.stop()
        if procs.serve_supports_workers():
            result["two_workers"] = "bridge serve with workers: 2 (one port)"
            print("canned backend, 2 workers (bridge serve, workers: 2)")
            gws2 = bench.start_gateways(cb, 1, issuer, key, base=issuer.audience, workers=2)
        else:
            result["two_workers"] = "two bridge serve processes, connections split evenly"
            print("canned backend, 2 workers (two gateway processes, connections split evenly)")
            gws2 = bench.start_gateways(cb, 2, issuer, key, base=issuer.audience)
        stack.callback(lambda: [g.stop() for g in gws2])
        run_scenarios(bench, cb, gws2, token, (50,), direct=False, only_read=mode.quick)
        for g in gws2:
            g.stop()
        run_floor(bench, result, again=True)

        # -- the real mock hospital --------------------------------------------------
        if not args.skip_mock:
            print("mock hospital (spyne), 1 worker")
            try:
                run_mock(bench, stack, issuer, key)
            except Exception as exc:  # the canned figures still deserve a report
                result["mock_error"] = f"{type(exc).__name__}: {exc}"[:2000]
                print(f"  the mock hospital part failed: {result['mock_error']}")

        result["startup"] = {
            "ready_s": [s["ready_s"] for s in bench.gateway_starts],
            "ready_median_s": statistics.median(s["ready_s"] for s in bench.gateway_starts),
            "ready_max_s": max(s["ready_s"] for s in bench.gateway_starts),
            "ready_cold_s": [
                s["ready_s"] for s in bench.gateway_starts if s.get("wsdl_cache") == "cold"
            ],
            "mappings": sorted(procs.systems_config("http://x")[1]),
        }
        result["rows"] = bench.rows
        result["profiles"] = bench.profiles
        result["elapsed_s"] = round(time.monotonic() - started, 1)

    result["targets"] = report.targets(result)
    markdown = report.markdown(result)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "latest.md").write_text(markdown)
    print()
    print(markdown)
    if not mode.quick and not args.no_readme:
        report.update_readme(procs.BENCH / "README.md", markdown)
        print("bench/README.md: latest table updated")
    print(f"wrote {RESULTS / 'latest.md'} and latest.json in {result['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process the bench started was stopped", file=sys.stderr)
        sys.exit(130)
