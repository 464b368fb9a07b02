"""The soak test (issue #6): apps under load while the hospital misbehaves, then a reckoning.

    .venv/bin/python -m tests.reliability.soak --duration 240      # make soak
    .venv/bin/python -m tests.reliability.soak --duration 45       # what make test runs
    .venv/bin/python -m tests.reliability.soak --replicas 2 \
        --postgres postgresql://postgres@127.0.0.1:5432/postgres --fresh-database

A private mock hospital (session cap `max_sessions`, short idle timeout) and
one gateway (`bridge serve`, its own SQLite store) on loopback ports; or,
with `replicas` > 1, that many gateway processes sharing one PostgreSQL store
and one paging key, the apps spread over them (see tests/reliability/load.py
for what they do on another replica on purpose). For
`duration` seconds `clients` apps mix Patient reads and searches, lab
Observation searches with a `next` page, device Observation creates,
transaction Bundles of readings and asynchronous creates (`Prefer:
respond-async`, status URL polled to the end). Meanwhile, through the mock's
side door and the process table:

* latency 5-30 ms, changed every 3 s, and a 2 % fault rate on every system;
* a session-expiry storm on every system every 10 s;
* a 10 s full outage of the EHR (`refuse_seconds`) at a fifth of the run;
* one SIGKILL of the gateway (of the last replica), once the outage and its
  breaker cooldown are over, and a restart on the same port with the same
  store.

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bridge.mock import MockHospital
from tests.reliability.launcher import RestartableGateway, replica_set
from tests.reliability.load import App, Load
from tests.reliability.reconcile import GATEWAY_NAME, Run, SoakReport, Window, reconcile

__all__ = ["SoakReport", "fresh_database", "run_soak"]

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


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server at `server_url`, dropped afterwards.

    `server_url` names any database the user may connect to and create others
    from (postgresql://USER:PASSWORD@HOST:PORT/DB), as BRIDGE_TEST_POSTGRES_URL does."""
    import asyncpg

    name = f"bridge_soak_{secrets.token_hex(4)}"

    async def run(sql: str) -> None:
        connection = await asyncpg.connect(server_url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    try:
        asyncio.run(run(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(
            f"soak: the PostgreSQL server at {_where(server_url)} could not create a database "
            f"({type(exc).__name__}: {exc}); set BRIDGE_TEST_POSTGRES_URL=postgresql://USER:"
            "PASSWORD@HOST:PORT/DB (a user that may create databases) or run a server on "
            "127.0.0.1:5432"
        ) from None
    base, _, _ = server_url.partition("?")[0].rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def _where(url: str) -> str:
    """A database URL without its credentials, for reports."""
    return url.rpartition("@")[2]


def run_soak(
    *,
    duration: float = 240,
    clients: int = 24,
    seed: int = 6,
    max_sessions: int = 4,
    session_idle_timeout: float = 6,
    fault_rate: float = 0.02,
    drain_timeout: float = 60,
    replicas: int = 1,
    store_url: str | None = None,
    run_dir: Path | None = None,
    log: Any = None,
) -> SoakReport:
    """Run the soak and return its report (`report.ok`, `report.text()`).

    `replicas` > 1 needs `store_url`, a PostgreSQL database they share (best an
    empty one: `fresh_database`); one gateway uses a SQLite file unless given one."""
    plan = _Plan.for_duration(duration)
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if replicas > 1 and not (store_url or "").startswith("postgresql"):
        raise ValueError(
            f"{replicas} replicas share a PostgreSQL store: give its URL "
            "(store_url, --postgres URL), not " + repr(store_url)
        )
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
        "replicas": replicas,
        "store": f"PostgreSQL {_where(store_url)}" if store_url else "SQLite",
        "run_dir": str(run_dir),
    }
    with MockHospital.start(
        max_sessions=max_sessions,
        session_idle_timeout=session_idle_timeout,
        seed=seed,
        patients=2000,
    ) as hospital:
        gateways = replica_set(run_dir, hospital.url, replicas, extra=extra, store_url=store_url)
        try:
            for gateway in gateways:
                gateway.start()
            where = ", ".join(g.base for g in gateways)
            say(f"soak: mock {hospital.url}, gateway {where}, run dir {run_dir}")
            soak = _Soak(hospital, gateways, plan, clients, seed, fault_rate, say)
            run = asyncio.run(soak.run(settings, hold, max_sessions, drain_timeout))
        finally:
            for gateway in gateways:
                gateway.stop()
        run.gateway_log_errors = [
            f"{g.name}: {line}" if replicas > 1 else line
            for g in gateways
            for line in _log_errors(g.logs())
        ]
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
        gateways: list[RestartableGateway],
        plan: _Plan,
        clients: int,
        seed: int,
        fault_rate: float,
        say: Any,
    ) -> None:
        self.hospital = hospital
        self.gateways = gateways
        # The last replica is killed (the only one, with one).
        self.killed = len(gateways) - 1
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
        self.breakers: dict[int, list[tuple[float, dict[str, str] | None]]] = {
            i: [] for i in range(len(gateways))
        }
        self.stats: list[tuple[float, dict[str, Any]]] = []
        # Legacy logins per replica and mock system from /metrics: the last value seen,
        # and what earlier processes of the replica had counted (a restart resets it).
        self.logins_seen: dict[str, dict[str, int]] = {}
        self.logins_before: dict[str, dict[str, int]] = {}

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
        apps = []
        for i in range(self.clients):
            # One token per app, good at every replica (they share the issuer and the base).
            auth = {"Authorization": "Bearer " + self.gateways[0].token(SCOPE, f"soak-app-{i}")}
            pools = [
                httpx.AsyncClient(base_url=g.base, headers=auth, timeout=30) for g in self.gateways
            ]
            apps.append(App(i, pools))
        try:
            self.t0 = time.monotonic()
            await self._faults(side, latency_ms=5, fault_rate=self.fault_rate)
            self.event(f"latency 5 ms and fault rate {self.fault_rate:g} on every system")
            samplers = [asyncio.create_task(self._sample(side))]
            chaos = asyncio.create_task(self._chaos(side))
            workers = [asyncio.create_task(self.load.client(app)) for app in apps]
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
            for client in [side, *(pool for app in apps for pool in app.https)]:
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
            replicas=len(self.gateways),
            killed_replica=self.killed,
            replica_logins=self._logins(),
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
                victim = self.gateways[self.killed]
                pid = victim.pid
                victim.kill()
                self.event(f"{victim.name} SIGKILLed (pid {pid}) under load")
                await asyncio.to_thread(victim.start)
                self.ready_again_at = self.now()
                self.event(f"{victim.name} restarted on the same port and store, /healthz answers")
            await asyncio.sleep(0.1)

    async def _sample(self, side: httpx.AsyncClient) -> None:
        """Each replica's breaker states from /readyz and the mock's counters (and with
        several replicas each one's legacy logins from /metrics), a few times a second."""
        probe = httpx.AsyncClient(timeout=2)
        tick = 0
        try:
            while True:
                for i, gateway in enumerate(self.gateways):
                    at = self.now()
                    try:
                        reply = await probe.get(f"{gateway.origin}/readyz")
                        self.breakers[i].append((at, reply.json().get("breakers", {})))
                    except (httpx.TransportError, ValueError):
                        self.breakers[i].append((at, None))
                if tick % 2 == 0:
                    with contextlib.suppress(httpx.TransportError):
                        counters = await side.get("/stats")
                        self.stats.append((self.now(), counters.json()))
                    if len(self.gateways) > 1:
                        await self._sample_logins(probe)
                tick += 1
                await asyncio.sleep(SAMPLE_EVERY)
        finally:
            await probe.aclose()

    async def _sample_logins(self, probe: httpx.AsyncClient) -> None:
        for gateway in self.gateways:
            try:
                text = (await probe.get(f"{gateway.origin}/metrics")).text
            except httpx.TransportError:
                continue
            name = gateway.name.replace("-", " ")
            seen = self.logins_seen.setdefault(name, {})
            before = self.logins_before.setdefault(name, {})
            for system, count in _logins(text).items():
                if count < seen.get(system, 0):  # a new process: its counter began at 0
                    before[system] = before.get(system, 0) + seen[system]
                seen[system] = count

    def _logins(self) -> dict[str, dict[str, int]]:
        """Logins per replica (at least: a killed process's last ones may be unseen)."""
        return {
            name: {s: n + self.logins_before[name].get(s, 0) for s, n in seen.items()}
            for name, seen in self.logins_seen.items()
        }


def _logins(metrics: str) -> dict[str, int]:
    """`bridge_legacy_logins_total{system="hospital"} 12.0` lines, by mock system name."""
    mock_name = {gateway: mock for mock, gateway in GATEWAY_NAME.items()}
    found = {}
    for line in metrics.splitlines():
        if line.startswith('bridge_legacy_logins_total{system="'):
            labels, _, value = line.rpartition(" ")
            system = labels.split('"')[1]
            found[mock_name.get(system, system)] = int(float(value))
    return found


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
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="gateway processes sharing one store (more than one needs --postgres)",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="the gateways' store: postgresql://USER:PASSWORD@HOST:PORT/DB (best empty)",
    )
    parser.add_argument(
        "--fresh-database",
        action="store_true",
        help="create a new database on --postgres's server for the run and drop it after",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="gateway config, store and log (kept; by default a temporary one, kept on failure)",
    )
    args = parser.parse_args(argv)
    if args.replicas > 1 and not args.postgres:
        parser.error(f"--replicas {args.replicas} needs --postgres URL: they share its store")
    if args.fresh_database and not args.postgres:
        parser.error("--fresh-database needs --postgres URL: the server to create it on")
    with contextlib.ExitStack() as stack:
        store_url = args.postgres
        if args.fresh_database:
            store_url = stack.enter_context(fresh_database(args.postgres))
        report = run_soak(
            duration=args.duration,
            clients=args.clients,
            seed=args.seed,
            max_sessions=args.max_sessions,
            fault_rate=args.fault_rate,
            replicas=args.replicas,
            store_url=store_url,
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
