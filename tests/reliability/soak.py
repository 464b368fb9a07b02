"""The soak test (issue #6): apps under load while the hospital misbehaves, then a reckoning.

    .venv/bin/python -m tests.reliability.soak --duration 240      # make soak
    .venv/bin/python -m tests.reliability.soak --duration 45       # what make test runs

A private mock hospital (session cap `max_sessions`, short idle timeout) and
one gateway (`bridge serve`, its own SQLite store) on loopback ports. For
`duration` seconds `clients` apps mix Patient reads and searches, lab
Observation searches with a `next` page, device Observation creates,
transaction Bundles of readings and asynchronous creates (`Prefer:
respond-async`, status URL polled to the end). Meanwhile, through the mock's
side door and the process table:

* latency 5-30 ms, changed every 3 s, and a 2 % fault rate on every system;
* a session-expiry storm on every system every 10 s;
* a 10 s full outage of the EHR (`refuse_seconds`) at a fifth of the run;
* one SIGKILL of the gateway, once the outage and its breaker cooldown are
  over, and a restart on the same port with the same store.

Then asynchronous writes are given time to finish, the EHR's vitals are read
through the side door and `reconcile` judges the promises (see
tests/reliability/reconcile.py). The report is printed; the exit status is 1
when a check failed. `run_soak(...)` does the same from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bridge.mock import MockHospital
from tests.reliability.launcher import RestartableGateway
from tests.reliability.load import Load
from tests.reliability.reconcile import Run, SoakReport, Window, reconcile

__all__ = ["SoakReport", "run_soak"]

SCOPE = "user/Patient.rs user/Observation.crs"
OUTAGE_SECONDS = 10.0
BREAKER_COOLDOWN = 10.0  # the gateway's default connection.breaker_cooldown
STORM_EVERY = 10.0
LATENCY_EVERY = 3.0
SAMPLE_EVERY = 0.25
ASYNC_LEASE = 10.0


def gateway_settings(idle_timeout: float) -> tuple[dict[str, Any], float]:
    """Gateway settings that fit the mock hospital, and how long a killed process's
    sessions keep the legacy session cap taken.

    Only settings this tree's gateway knows are given (unknown keys stop it): the
    global session budget's lease ttl, set to the legacy idle timeout as its
    description advises, and a short hold on asynchronous writes, so a write the
    killed process was delivering is taken up again within the run.
    """
    from bridge.settings import Settings, StoreSettings

    extra: dict[str, Any] = {}
    hold = idle_timeout
    lease_ttl = StoreSettings.model_fields.get("session_lease_ttl")
    if lease_ttl is not None:
        ttl = max(idle_timeout, 5.0)
        extra["store"] = {"session_lease_ttl": ttl}
        hold = max(hold, ttl)
    if "async_writes" in Settings.model_fields:
        extra["async_writes"] = {"lease": ASYNC_LEASE}
    return extra, hold


@dataclass
class _Plan:
    duration: float
    outage_at: float
    kill_at: float

    @classmethod
    def for_duration(cls, duration: float) -> _Plan:
        if duration < 40:
            raise ValueError(f"duration must be >= 40 s (outage, breaker, kill), got {duration}")
        outage_at = max(5.0, duration * 0.2)
        # The kill comes after the outage and the breaker's cooldown, so each
        # 503 has one cause; and early enough that the restarted process works
        # for a while under the same load.
        kill_at = max(outage_at + OUTAGE_SECONDS + BREAKER_COOLDOWN + 4, duration * 0.6)
        return cls(duration, outage_at, kill_at)


def run_soak(
    *,
    duration: float = 240,
    clients: int = 24,
    seed: int = 6,
    max_sessions: int = 4,
    session_idle_timeout: float = 6,
    fault_rate: float = 0.02,
    drain_timeout: float = 60,
    run_dir: Path | None = None,
    log: Any = None,
) -> SoakReport:
    """Run the soak and return its report (`report.ok`, `report.text()`)."""
    plan = _Plan.for_duration(duration)
    extra, hold = gateway_settings(session_idle_timeout)
    # A run directory of our own is removed after a clean run; a failed run keeps it
    # (the gateway's log is the evidence) and the report names it.
    own_dir = run_dir is None
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="bridge-soak-"))
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    settings = {
        "duration": duration,
        "clients": clients,
        "seed": seed,
        "max_sessions": max_sessions,
        "session_idle_timeout": session_idle_timeout,
        "session_hold": hold,
        "gateway_settings": extra,
        "fault_rate": fault_rate,
        "outage_at": plan.outage_at,
        "kill_at": plan.kill_at,
        "run_dir": str(run_dir),
    }
    with MockHospital.start(
        max_sessions=max_sessions,
        session_idle_timeout=session_idle_timeout,
        seed=seed,
        patients=2000,
    ) as hospital:
        gateway = RestartableGateway(run_dir, hospital.url, extra=extra)
        try:
            gateway.start()
            say(f"soak: mock {hospital.url}, gateway {gateway.base}, run dir {run_dir}")
            soak = _Soak(hospital, gateway, plan, clients, seed, fault_rate, say)
            run = asyncio.run(soak.run(settings, hold, max_sessions, drain_timeout))
        finally:
            gateway.stop()
        run.gateway_log_errors = _log_errors(gateway.logs())
        report = reconcile(soak.load.calls, soak.load.writes, run)
    if own_dir and report.ok:
        shutil.rmtree(run_dir, ignore_errors=True)
    return report


def _log_errors(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if "Traceback" in line or "Error" in line:
                lines.append(line)
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
            lines.append(line)
    return lines


class _Soak:
    def __init__(
        self,
        hospital: MockHospital,
        gateway: RestartableGateway,
        plan: _Plan,
        clients: int,
        seed: int,
        fault_rate: float,
        say: Any,
    ) -> None:
        self.hospital = hospital
        self.gateway = gateway
        self.plan = plan
        self.clients = clients
        self.fault_rate = fault_rate
        self.say = say
        self.rng = random.Random(seed)
        self.t0 = time.monotonic()
        patients = hospital.sample_patients(20, offset=100)
        self.load = Load(
            mrns=[p["MRN"] for p in patients],
            families=sorted({p["Name"].split("^")[0] for p in patients}),
            run_tag=f"SOAK{secrets.token_hex(3).upper()}",
            rng=random.Random(seed + 1),
            clock=self.now,
        )
        self.events: list[tuple[float, str]] = []
        self.outages: list[Window] = []
        self.kill_at: float | None = None
        self.ready_again_at: float | None = None
        self.breakers: list[tuple[float, dict[str, str] | None]] = []
        self.stats: list[tuple[float, dict[str, Any]]] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def event(self, what: str, at: float | None = None) -> None:
        at = self.now() if at is None else at
        self.events.append((round(at, 2), what))
        self.say(f"soak: {at:7.2f}s {what}")

    async def run(
        self, settings: dict[str, Any], hold: float, cap: int, drain_timeout: float
    ) -> Run:
        side = httpx.AsyncClient(base_url=f"{self.hospital.url}/_mock", timeout=10)
        apps = [
            httpx.AsyncClient(
                base_url=self.gateway.base,
                headers={"Authorization": "Bearer " + self.gateway.token(SCOPE, f"soak-app-{i}")},
                timeout=30,
            )
            for i in range(self.clients)
        ]
        try:
            self.t0 = time.monotonic()
            await self._faults(side, latency_ms=5, fault_rate=self.fault_rate)
            self.event(f"latency 5 ms and fault rate {self.fault_rate:g} on every system")
            samplers = [asyncio.create_task(self._sample(side))]
            chaos = asyncio.create_task(self._chaos(side))
            workers = [asyncio.create_task(self.load.client(i, a)) for i, a in enumerate(apps)]
            await asyncio.sleep(self.plan.duration)
            self.load.stopping.set()
            self.event("load stops; waiting for answers in flight and asynchronous writes")
            await asyncio.gather(*workers)
            await chaos
            await self.load.drain(drain_timeout)
            self.event(f"drained ({sum(1 for w in self.load.writes if w.accepted)} async accepted)")
            for task in samplers:
                task.cancel()
            final = (await side.get("/stats")).json()
            await side.delete("/faults")
            vitals = {
                mrn: (await side.get("/ehr/vitals", params={"mrn": mrn})).json()
                for mrn in self.load.mrns
            }
        finally:
            for client in [side, *apps]:
                await client.aclose()
        return Run(
            settings=settings,
            events=self.events,
            outages=self.outages,
            kill_at=self.kill_at,
            ready_again_at=self.ready_again_at,
            session_hold=hold,
            session_cap=cap,
            breaker_samples=self.breakers,
            stats_samples=self.stats,
            final_stats=final,
            vitals=vitals,
            run_tag=self.load.run_tag,
            gateway_log_errors=[],
        )

    async def _faults(self, side: httpx.AsyncClient, **settings: Any) -> None:
        reply = await side.post("/faults", json=settings)
        reply.raise_for_status()

    async def _chaos(self, side: httpx.AsyncClient) -> None:
        """The fault schedule, one step at a time, until the load stops."""
        next_storm = STORM_EVERY / 2
        next_latency = LATENCY_EVERY
        outage_done = kill_done = False
        while not self.load.stopping.is_set():
            now = self.now()
            if now >= next_latency:
                for system in ("ehr", "lab"):
                    ms = round(self.rng.uniform(5, 30))
                    await self._faults(side, system=system, latency_ms=ms)
                next_latency += LATENCY_EVERY
            if now >= next_storm:
                await self._faults(side, expire_sessions=True)
                self.event("session-expiry storm on every system")
                next_storm += STORM_EVERY
            if not outage_done and now >= self.plan.outage_at:
                start = self.now()
                await self._faults(side, system="ehr", refuse_seconds=OUTAGE_SECONDS)
                end = self.now() + OUTAGE_SECONDS
                self.outages.append(Window("outage", "ehr", start, end))
                self.event(f"EHR outage: every call refused for {OUTAGE_SECONDS:g} s", start)
                outage_done = True
            if not kill_done and now >= self.plan.kill_at:
                kill_done = True
                self.kill_at = self.now()
                pid = self.gateway.pid
                self.gateway.kill()
                self.event(f"gateway SIGKILLed (pid {pid}) under load")
                await asyncio.to_thread(self.gateway.start)
                self.ready_again_at = self.now()
                self.event("gateway restarted on the same port and store, /healthz answers")
            await asyncio.sleep(0.1)

    async def _sample(self, side: httpx.AsyncClient) -> None:
        """Breaker states from /readyz and the mock's counters, a few times a second."""
        probe = httpx.AsyncClient(timeout=2)
        tick = 0
        try:
            while True:
                at = self.now()
                try:
                    reply = await probe.get(f"{self.gateway.origin}/readyz")
                    self.breakers.append((at, reply.json().get("breakers", {})))
                except (httpx.TransportError, ValueError):
                    self.breakers.append((at, None))
                if tick % 2 == 0:
                    with contextlib.suppress(httpx.TransportError):
                        counters = await side.get("/stats")
                        self.stats.append((self.now(), counters.json()))
                tick += 1
                await asyncio.sleep(SAMPLE_EVERY)
        finally:
            await probe.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=240, help="seconds of load (>= 40)")
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--max-sessions",
        type=int,
        default=4,
        help="the mock's session cap (the mappings declare 4)",
    )
    parser.add_argument("--fault-rate", type=float, default=0.02)
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="gateway config, store and log (kept; by default a temporary one, kept on failure)",
    )
    args = parser.parse_args(argv)
    report = run_soak(
        duration=args.duration,
        clients=args.clients,
        seed=args.seed,
        max_sessions=args.max_sessions,
        fault_rate=args.fault_rate,
        run_dir=args.run_dir,
    )
    print(report.text())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n")
        print(f"figures: {args.json}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
