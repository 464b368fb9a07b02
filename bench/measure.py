"""One measured window: the gateway's CPU, the backend's counters, the load's figures.

`Bench.measure(label, load, backend, gateways)` runs a load (after its warm-up)
and reads, as the window opens and closes, the CPU time of every gateway
process (/proc/<pid>/stat), the backend's call and login counters, and the
machine's busy time; it returns the load generator's figures with per-request
ones added. `Backend` is a SOAP backend under test (canned or mock); the floor
(bench/floor.py) is measured as a gateway with no backend.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from bench.drivers import Load, Python, Wrk


@dataclass(frozen=True)
class Mode:
    duration: int
    warmup: int
    profile_seconds: int
    quick: bool


FULL = Mode(duration=8, warmup=2, profile_seconds=8, quick=False)
QUICK = Mode(duration=2, warmup=1, profile_seconds=3, quick=True)


@dataclass
class Backend:
    """A SOAP backend the run measures against: its URL, pid and call counters."""

    name: str
    url: str
    pid: int | None
    counters: Callable[[], tuple[int, int]]  # (legacy calls, logins) so far
    sessions: list[str] = field(default_factory=list)  # for direct calls

    @property
    def addr(self) -> tuple[str, int]:
        hostport = self.url.split("://", 1)[1].split("/", 1)[0]
        host, port = hostport.split(":")
        return (host, int(port))

    @property
    def path(self) -> str:
        return "/" + self.url.split("://", 1)[1].split("/", 1)[1]


class Bench:
    def __init__(self, mode: Mode, driver: Wrk | Python, work: Path, meta: dict[str, Any]) -> None:
        self.mode = mode
        self.driver = driver
        self.loader = Python()
        self.work = work
        self.meta = meta
        self.rows: list[dict[str, Any]] = []
        self.gateway_starts: list[dict[str, Any]] = []
        self.profiles: dict[str, Any] = {}
        self.seq = 0

    def log(self, text: str) -> None:
        print(text, flush=True)

    # -- one measured window ----------------------------------------------------------

    def _tag(self, label: str) -> str:
        self.seq += 1
        return f"{self.seq:02d}-" + re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")

    def measure(
        self,
        label: str,
        load: Load,
        backend: Backend | None,
        gateways: list[procs.Gateway],
        driver: Wrk | Python | None = None,
    ) -> dict[str, Any]:
        driver = driver or self.driver
        backend_pid = backend.pid if backend else None
        tag = self._tag(label)
        at: dict[str, Any] = {}

        def snapshot(key: str) -> Callable[[], None]:
            def take() -> None:
                calls, logins = backend.counters() if backend else (0, 0)
                at[key] = {
                    "busy": procs.machine_busy_seconds(),
                    "calls": calls,
                    "logins": logins,
                    "cpu": _cpu_of(gateways),
                    "backend_cpu": procs.cpu_seconds(backend_pid) if backend_pid else 0.0,
                }

            return take

        result = driver.run(
            load,
            self.work,
            tag,
            warmup=self.mode.warmup,
            on_start=snapshot("start"),
            on_stop=snapshot("stop"),
        )
        s0, s1 = at["start"], at["stop"]
        calls0, logins0, cpu0, bcpu0 = s0["calls"], s0["logins"], s0["cpu"], s0["backend_cpu"]
        calls1, logins1, cpu1, bcpu1 = s1["calls"], s1["logins"], s1["cpu"], s1["backend_cpu"]
        n = max(result["requests"], 1)
        per_process = {p: cpu1[p] - cpu0[p] for p in cpu0 if p in cpu1}
        ours = sum(per_process.values()) + (bcpu1 - bcpu0)
        ours += result.get("loader_cpu_s", 0.0)
        window = result["duration_s"] or 1.0
        result["machine_busy_cores"] = (s1["busy"] - s0["busy"]) / window
        # CPU that neither the gateway, the backend nor the load generator used:
        # other work on the machine, which the figures of this window shared it with.
        result["foreign_cores"] = max((s1["busy"] - s0["busy"] - ours) / window, 0.0)
        done = result["requests"] > 0  # else no per-request figure: the window was too short

        def per(value: float, scale: float = 1.0) -> float | None:
            return scale * value / n if done else None

        if backend:
            result["legacy_calls_per_req"] = per(calls1 - calls0)
            result["logins"] = logins1 - logins0
            result["logins_per_1k"] = per(logins1 - logins0, 1000)
        result["backend_cpu_us"] = per(bcpu1 - bcpu0, 1e6) if backend_pid else None
        if gateways:
            gw_cpu = sum(per_process.values())
            result["gateway_cpu_us"] = per(gw_cpu, 1e6)
            result["gateway_cpu_util"] = gw_cpu / window
            workers = [p for g in gateways for p in g.worker_pids()]
            # How the load spread over the workers (cores each), and their peak RSS.
            result["worker_cores"] = [round(per_process.get(p, 0.0) / window, 2) for p in workers]
            result["rss_peak_mb"] = [round(procs.status_kb(p, "VmHWM") / 1024, 1) for p in workers]
        errors = result.get("errors", {})
        bad = sum(errors.values()) if isinstance(errors, dict) else 0
        flag = f"  !! {errors} {result.get('first_bad', '')}" if bad else ""
        if result["foreign_cores"] > 0.2:
            flag += f"  (other processes used {result['foreign_cores']:.2f} cores)"
        if not done:
            self.log(f"  {label:<58} no request completed in the window{flag}")
            return result
        cpu = f"  cpu {result['gateway_cpu_us']:.0f} µs/req" if gateways else ""
        calls = f"  calls/req {result['legacy_calls_per_req']:.2f}" if backend else ""
        self.log(
            f"  {label:<58} {result['rps']:>9.1f} req/s  p50 {result['p50_ms']:.3f} ms  "
            f"p99 {result['p99_ms']:.2f} ms{cpu}{calls}{flag}"
        )
        return result

    def row(self, **fields: Any) -> None:
        self.rows.append(fields)

    # -- gateways -----------------------------------------------------------------------

    def start_gateways(
        self,
        backend: Backend,
        processes: int,
        issuer: Any,
        key: str,
        base: str | None = None,
        workers: int = 1,
    ) -> list[procs.Gateway]:
        """`processes` gateways (each with `workers` uvicorn workers) on their own ports."""
        gateways: list[procs.Gateway] = []
        for i in range(processes):
            port = procs.free_port()
            # Every process serves the same public base URL (the token audience) and
            # paging key, as replicas behind one address would.
            base = base or f"http://127.0.0.1:{port}/fhir"
            gateway = procs.start_gateway(
                self.work,
                backend.url,
                base_url=base,
                issuer=issuer.issuer,
                jwks=issuer.jwks(),
                paging_key=key,
                name=f"gateway-{backend.name}-w{workers}-{i + 1}",
                port=port,
                workers=workers,
            )
            gateways.append(gateway)
            if workers == 1:  # start-up figures: one process, nothing forked
                self.gateway_starts.append(
                    {
                        "backend": backend.name,
                        "ready_s": round(gateway.ready_seconds, 3),
                        "wsdl_cache": "cold" if gateway.wsdl_cache_cold else "warm",
                    }
                )
            self.log(
                f"  gateway pid {gateway.pid} on :{gateway.port} ({workers} worker"
                f"{'s' if workers > 1 else ''}) ready in {gateway.ready_seconds:.2f} s "
                f"({backend.name})"
            )
        return gateways


def _cpu_of(gateways: list[procs.Gateway]) -> dict[int, float]:
    """CPU seconds of every process of the gateways (supervisors and workers)."""
    out = {}
    for g in gateways:
        for pid in g.pids():
            with contextlib.suppress(OSError):
                out[pid] = procs.cpu_seconds(pid)
    return out
