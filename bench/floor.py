"""The floor: a trivial Starlette app on uvicorn, served as the gateway is, in the same run.

Its CPU per request is what this machine charges for uvicorn (uvloop, httptools)
and Starlette alone. The targets of issue 7 were set on a machine where it costs
~30 µs (DESIGN.md, "Where the time goes"), so the floor at 50 connections over
30 µs is how much slower this machine is: the speed factor the report scales the
targets' figures by ("at reference speed").

`measure(bench, conns)` starts the app, drives `GET /` with the run's load
generator at each connection count and stops it; `speed_factor` and `summary`
read its result.

    python bench/floor.py --port 8123    # serves until SIGTERM
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procs
from bench.drivers import Load
from bench.measure import Bench

NAME = "Starlette + uvicorn floor (trivial JSON answer)"
REFERENCE_US = 30.0  # the floor on the machine the targets were set on (DESIGN.md)


def serve(host: str, port: int) -> None:
    """The trivial app, with the uvicorn options `bridge serve` uses (bridge/cli.py),
    but uvicorn's own httptools protocol and its proxy headers from 127.0.0.1: as the
    targets' reference figure was measured (`bridge serve` runs bridge/server.py's
    protocol, one write per answer, and reads proxy headers only from
    `trusted_proxies`)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def answer(request: Request) -> JSONResponse:
        return JSONResponse({"resourceType": "OperationOutcome"})

    app = Starlette(routes=[Route("/", answer)])
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
    )


def measure(bench: Bench, conns: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """The floor at each connection count, in the run's windows: ``{"c50": {...}}``."""
    server = procs.start_floor(bench.work / "floor.log")
    try:
        bench.log(f"  floor pid {server.pid} on :{server.port}")
        rows: dict[str, dict[str, Any]] = {}
        for c in conns:
            load = Load([server.addr], c, bench.mode.duration, path="/")
            rows[f"c{c}"] = _row(c, bench.measure(f"{NAME} c{c}", load, None, [server]))
        return rows
    finally:
        server.stop()


def _row(conns: int, measured: dict[str, Any]) -> dict[str, Any]:
    keys = ("requests", "rps", "p50_ms", "p99_ms", "errors", "foreign_cores", "tool")
    return {
        "conns": conns,
        "cpu_us": measured.get("gateway_cpu_us"),
        **{k: measured.get(k) for k in keys},
    }


def speed_factor(floor: dict[str, Any] | None) -> float | None:
    """The floor's CPU per request at 50 connections over the reference's 30 µs, if measured
    (the mean of the floor before and after the gateway's scenarios, when both are there)."""
    cpu = _cpu_c50(floor)
    return None if cpu is None else cpu / REFERENCE_US


def summary(floor: dict[str, Any] | None) -> str | None:
    """One sentence: this machine's floor against the reference machine's, if measured."""
    cpu = _cpu_c50(floor)
    if cpu is None:
        return None
    said = (
        f"this machine answers a trivial request in {cpu:.0f} µs of server CPU "
        f"(50 connections); the targets' reference machine in ~{REFERENCE_US:.0f} µs: "
        f"speed factor {cpu / REFERENCE_US:.2f}"
    )
    before, after = _cpu(floor, "c50"), _cpu(floor, "c50_end")
    if before and after:
        said += (
            f" (the floor took {before:.0f} µs before the gateway's scenarios and "
            f"{after:.0f} µs after them: this machine drifted {100 * (after / before - 1):+.0f}% "
            "during the run)"
        )
    return said


def _cpu(floor: dict[str, Any] | None, key: str) -> float | None:
    cpu: float | None = ((floor or {}).get(key) or {}).get("cpu_us")
    return cpu or None


def _cpu_c50(floor: dict[str, Any] | None) -> float | None:
    found = [cpu for cpu in (_cpu(floor, "c50"), _cpu(floor, "c50_end")) if cpu]
    return sum(found) / len(found) if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
