"""The gateway's own CPU per request, in process: no uvicorn, no load generator.

A quick loop for whoever works on the hot path: the ASGI app built exactly as
`bridge serve` builds it (auth on with a development issuer's token, the
access log to a file, the audit trail committing to a SQLite store, every
mapping of `mappings/`) calls the canned backend (`bench/canned.py`, its own
process) over its real transport, and `time.process_time()` (every thread of
this process: the audit appender's too) is divided by the requests answered.
uvicorn's share of a served request (~60-80 µs here) is not in these figures.

    python bench/inproc.py                      # read, search page of 50, batch of 100
    python bench/inproc.py create -c 50          # one Observation create (a wearable reading)
    python bench/inproc.py read -n 20000 -c 50
    python bench/inproc.py read --profile out.raw   # py-spy on this process, then a summary
    python bench/inproc.py read -n 5000 --pyinstrument read.html   # the call tree, inclusive
    python bench/inproc.py read -n 1000 --instructions   # instructions per request (valgrind)
    python bench/inproc.py read --instructions --source /tmp/base   # the same, another tree
    python bench/inproc.py read -n 1000 --opcodes 30  # Python bytecodes per request, by concern

CPU time on a shared VM varies by 10-30% from one run to the next, more than
most changes to the hot path save. `--instructions` counts the instructions
the process executes per request instead (valgrind's callgrind, switched on
for the measured requests only; every thread of the process, the appender's
too): the same code gives the same count within ~1-2%, on any host (what
varies is the gateway's periodic work, which runs by the clock, and at 50
connections how many requests share an audit commit; `-c 1` repeats best).
It does not see the kernel's side of a system call, so a change that saves
system calls is measured with CPU time (`bench/quick.py`), not here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# bench/profile.py must not hide the standard library's `profile` (cProfile needs it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(BENCH.parent))

from bench import procs  # noqa: E402
from bench.record import batch, observation  # noqa: E402

META = json.loads((BENCH / "fixtures" / "recorded.json").read_text())


def _scope(method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers,
    }


async def _call(app: Any, method: str, path: str, query: bytes, headers: Any, body: bytes) -> int:
    sent = False
    status = 0

    async def receive() -> Any:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(method, path, query, list(headers)), receive, send)
    return status


_APPENDERS: list[Any] = []


def _watch_appenders() -> None:
    """Keep the audit trail's SQLite appender at hand, to print its commit counters."""
    from bridge.store.appender import SqliteAppender

    start = SqliteAppender.start

    def started(self: SqliteAppender) -> None:
        _APPENDERS.append(self)
        start(self)

    SqliteAppender.start = started  # type: ignore[method-assign]


def _appender() -> Any:
    return _APPENDERS[-1] if _APPENDERS else None


async def _run(args: argparse.Namespace) -> None:
    from bridge.app import create_app
    from bridge.auth.devissuer import DevIssuer
    from bridge.logs import configure_logging
    from bridge.settings import load_settings

    work = Path(tempfile.mkdtemp(prefix="bench-inproc-"))
    canned = procs.Canned.start(work / "canned.log")
    try:
        systems, _ = procs.systems_config(canned.url)
        base = "http://127.0.0.1:8080/fhir"
        issuer = DevIssuer(issuer="https://bench.issuer.invalid", audience=base)
        config = {
            "base_url": base,
            "systems": systems,
            "paging_key": procs.new_paging_key(),
            "auth": {"mode": "jwt", "issuer": issuer.issuer, "jwks": issuer.jwks()},
            "log_level": "info",
            "store": {"url": f"sqlite:///{work / 'store.db'}"},
        }
        path = work / "config.yaml"
        path.write_text(json.dumps(config))
        settings = load_settings(path)
        configure_logging(settings.log_level)
        handler = logging.getLogger().handlers[0]
        handler.stream = (work / "gateway.log").open("a")  # type: ignore[attr-defined]
        _watch_appenders()
        app = create_app(settings)
        token = issuer.mint(scope=META["scope"], client_id="bench")
        auth = [
            (b"authorization", f"Bearer {token}".encode()),
            (b"accept", b"application/fhir+json"),
        ]
        post = [*auth, (b"content-type", b"application/fhir+json")]
        bundle = json.dumps(batch(META["read_id"], 100)).encode()
        reading = json.dumps(observation(META["read_id"])).encode()
        scenarios = {
            "read": ("GET", f"/fhir/Patient/{META['read_id']}", b"", auth, b""),
            "search": ("GET", "/fhir/Patient", META["search"].encode(), auth, b""),
            "batch": ("POST", "/fhir", b"", post, bundle),
            "create": ("POST", "/fhir/Observation", b"", post, reading),
        }
        async with app.router.lifespan_context(app):
            if args.gc_freeze:
                import gc

                gc.collect()
                gc.freeze()
                if args.gc_threshold:
                    gc.set_threshold(args.gc_threshold, 10, 10)
            for name in args.scenarios or ["read", "search", "batch"]:
                n = args.n or {"read": 20000, "search": 600, "batch": 60, "create": 5000}[name]
                c = args.c

                async def client(
                    count: int, spec: tuple[Any, ...] = scenarios[name], name: str = name
                ) -> None:
                    for _ in range(count):
                        status = await _call(app, *spec)
                        if status >= 300:
                            raise RuntimeError(f"{name}: HTTP {status}")

                await asyncio.gather(*(client(max(1, n // 20 // c)) for _ in range(c)))  # warm-up
                spy = None
                if args.profile:
                    from bench import profile

                    seconds = max(2, int(args.profile_seconds))
                    spy = profile.record(os.getpid(), seconds, Path(args.profile))
                    await asyncio.sleep(0.5)
                tree = None
                if args.pyinstrument:
                    from pyinstrument import Profiler

                    # Async-aware: time a request awaits is charged to where it awaits.
                    tree = Profiler(interval=0.0002, async_mode="enabled")
                    tree.start()
                opcodes = None
                if args.opcodes:
                    from bench.opcodes import OpcodeCount

                    opcodes = OpcodeCount(str(procs.SOURCE))
                profiler = None
                if args.cprofile:
                    import cProfile

                    profiler = cProfile.Profile()
                    profiler.enable()
                appender = _appender()
                commits0 = appender.commits if appender is not None else 0
                handed0 = appender.handed_to_thread if appender is not None else 0
                retries0 = appender.retries if appender is not None else 0
                if args.under_callgrind:
                    _callgrind("--zero")
                    _callgrind("--instr=on")
                cpu, wall = time.process_time(), time.perf_counter()
                per = max(1, n // c)
                if opcodes is not None:
                    opcodes.start()
                try:
                    await asyncio.gather(*(client(per) for _ in range(c)))
                finally:
                    if opcodes is not None:
                        opcodes.stop()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                instructions = None
                if args.under_callgrind:
                    _callgrind("--instr=off")
                    instructions = _dumped_instructions(Path(args.under_callgrind))
                if tree is not None:
                    tree.stop()
                    Path(args.pyinstrument).write_text(tree.output_html())
                    print(tree.output_text(show_all=False, color=False, unicode=True), flush=True)
                if profiler is not None:
                    import pstats

                    profiler.disable()
                    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.cprofile)
                done = per * c
                if opcodes is not None:
                    print(f"{name} c{c}: " + opcodes.report(done, args.opcodes), flush=True)
                if instructions is not None:
                    print(
                        f"{name:7s} c{c:<3d} {done:6d} requests  "
                        f"{instructions / done / 1000:8.1f} k instructions/req (callgrind)",
                        flush=True,
                    )
                else:
                    print(
                        f"{name:7s} c{c:<3d} {done:6d} requests  "
                        f"{cpu / done * 1e6:8.1f} µs CPU/req  "
                        f"{done / wall:8.0f} req/s (wall, this process only)",
                        flush=True,
                    )
                appender = _appender()
                if appender is not None:
                    commits = appender.commits - commits0
                    handed = appender.handed_to_thread - handed0
                    retried = appender.retries - retries0
                    print(
                        f"        audit: {commits} commits in the loop "
                        f"({done / max(1, commits):.1f} requests each), {retried} tried again "
                        f"and {handed} batches handed to the thread (database locked)",
                        flush=True,
                    )
                if spy is not None:
                    spy.wait()
                    from bench import profile

                    summary = profile.summarize(Path(args.profile), BENCH.parent)
                    print(profile.markdown(summary, f"{name} in process"))
    finally:
        canned.stop()
        shutil.rmtree(work, ignore_errors=True)


def _callgrind(*command: str) -> None:
    """Tell the callgrind this process runs under to do something, and wait until it has."""
    subprocess.run(
        ["callgrind_control", *command, str(os.getpid())], check=True, capture_output=True
    )


def _dumped_instructions(out: Path) -> int:
    """The instructions counted since the last zeroing, from a fresh dump."""
    before = set(out.parent.glob(out.name + "*"))
    _callgrind("--dump")
    (dump,) = set(out.parent.glob(out.name + "*")) - before
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"{dump}: no totals line")


def _without(argv: list[str], flag: str, option: str) -> list[str]:
    """`argv` without `flag` and without `option` and its value (as one or two words)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif a != flag and not a.startswith(option + "="):
            out.append(a)
    return out


def _under_callgrind(argv: list[str], keep: str | None) -> int:
    """Run this script again under valgrind's callgrind, its instrumentation off
    until the measured requests start; `keep`: a folder that keeps the dumps."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    with contextlib.ExitStack() as stack:
        folder = keep or stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-callgrind-"))
        Path(folder).mkdir(parents=True, exist_ok=True)
        out = Path(folder) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            str(Path(__file__).resolve()),
            *_without(argv, "--instructions", "--keep-dumps"),
            "--under-callgrind",
            str(out),
        ]
        done = subprocess.run(command, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            sys.stderr.write(done.stderr)
        return done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", choices=["read", "search", "batch", "create"])
    parser.add_argument("-n", type=int, default=0, help="requests (default per scenario)")
    parser.add_argument("-c", type=int, default=50, help="concurrent clients")
    parser.add_argument("--profile", help="py-spy raw output file (then: bench/profile.py FILE)")
    parser.add_argument("--profile-seconds", type=float, default=6)
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after start-up")
    parser.add_argument("--gc-threshold", type=int, default=0, help="with --gc-freeze: gen0")
    parser.add_argument(
        "--cprofile", type=int, default=0, metavar="N", help="cProfile: print the top N functions"
    )
    parser.add_argument(
        "--opcodes",
        type=int,
        default=0,
        metavar="N",
        help="count the Python bytecodes per request (bench/opcodes.py): by concern, "
        "then the top N modules and functions",
    )
    parser.add_argument(
        "--pyinstrument",
        metavar="HTML",
        help="pyinstrument: print the call tree (inclusive times) and write it as HTML",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request under valgrind's callgrind, not CPU time",
    )
    parser.add_argument(
        "--keep-dumps",
        metavar="DIR",
        help="with --instructions: keep callgrind's dumps in DIR (callgrind_annotate reads them)",
    )
    parser.add_argument("--under-callgrind", metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help="run bridge from this tree (a snapshot)")
    args = parser.parse_args(argv)
    if args.instructions:
        return _under_callgrind(sys.argv[1:] if argv is None else argv, args.keep_dumps)
    if args.source:
        procs.use_source(args.source)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
