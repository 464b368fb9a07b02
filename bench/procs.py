"""The benchmark's processes: the canned backend, the gateway, the floor, /proc readings.

Every process is started on 127.0.0.1 and stopped by its handle's ``stop()``;
``run.py`` and ``record.py`` register each handle in an ExitStack, so a
failure or Ctrl+C stops them too.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The tree whose bridge/ and mappings/ the gateway and the mock run from: this
# checkout, or a snapshot (``run.py --source``) while the checkout is mid-edit.
SOURCE = ROOT


def use_source(path: Path) -> None:
    """Run bridge (gateway, mock, imports here) from `path` instead of this checkout."""
    global SOURCE
    SOURCE = path.resolve()
    if not (SOURCE / "bridge" / "__init__.py").is_file():
        raise SystemExit(f"--source {path}: no bridge/ package there")
    sys.path.insert(0, str(SOURCE))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SOURCE), os.environ.get("PYTHONPATH", "")) if p
    )
    os.chdir(SOURCE)  # the mock's spawner and `python -m` resolve bridge from the cwd


# -- /proc ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def machine_busy_seconds() -> float:
    """CPU time every core has spent busy since boot (all processes), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def busy_processes(seconds: float = 1.0, top: int = 5) -> list[tuple[float, int, str]]:
    """The processes that used the most CPU over the next `seconds`: (cores, pid, command)."""

    def sample() -> dict[int, float]:
        out = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    out[int(entry)] = cpu_seconds(int(entry))
        return out

    before = sample()
    time.sleep(seconds)
    after = sample()
    used = []
    for pid, cpu in after.items():
        delta = cpu - before.get(pid, cpu)
        if delta > 0:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            used.append((delta / seconds, pid, cmd[:100]))
    return sorted(used, reverse=True)[:top]


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` figure of /proc/<pid>/status, e.g. VmHWM (peak RSS) or VmRSS."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "python_build": python_build(),
        "kernel": os.uname().release,
    }


def python_build(maps: Path = Path("/proc/self/maps")) -> str:
    """How this interpreter was built, as far as its speed goes (the Makefile's
    FAST_BUILD): profile-guided (`--enable-optimizations`), linked statically (as
    Debian and Ubuntu build theirs, profile-guided too), or neither (libpython
    shared, no profile: pyenv's default), which runs the gateway on ~9-13% more
    instructions a request."""
    import sysconfig

    built = []
    if "--enable-optimizations" in (sysconfig.get_config_var("CONFIG_ARGS") or ""):
        built.append("profile-guided")
    try:
        shared = "libpython" in maps.read_text()
    except OSError:
        return ", ".join(built) or "unknown"
    built.append("libpython shared" if shared else "linked statically")
    return ", ".join(built)


# -- small HTTP helpers ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fetch(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    assert url.startswith("http://")
    hostport, _, path = url[len("http://") :].partition("/")
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        conn.request(method, "/" + path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    status, body = fetch(url, headers=headers)
    if status != 200:
        raise RuntimeError(f"GET {url} -> {status}: {body[:300]!r}")
    return json.loads(body)


# -- processes -------------------------------------------------------------------


def _env() -> dict[str, str]:
    # The gateway reads BRIDGE_* variables; the bench's own settings must win.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _first_line(stream: IO[bytes], timeout: float) -> str | None:
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout).decode(errors="replace").strip()
    except queue.Empty:
        return None


def terminate(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@dataclass
class Canned:
    """A running bench/canned.py."""

    process: subprocess.Popen[bytes]
    url: str  # the SOAP endpoint

    @classmethod
    def start(cls, log_path: Path) -> Canned:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, str(BENCH / "canned.py"), "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=log,
                env=_env(),
            )
        assert process.stdout is not None
        line = _first_line(process.stdout, 20)
        prefix = "canned backend ready at "
        if not line or not line.startswith(prefix):
            terminate(process)
            raise RuntimeError(f"the canned backend did not start: {line!r}, see {log_path}")
        return cls(process, line[len(prefix) :] + "/ehr")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stats(self) -> dict[str, Any]:
        base = self.url.rsplit("/", 1)[0]
        stats: dict[str, Any] = get_json(base + "/_stats")
        return stats

    def stop(self) -> None:
        terminate(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def serve_supports_workers() -> bool:
    """Whether `bridge serve` of the source under test runs several worker processes."""
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=SOURCE,
        env=_env(),
    )
    return "--workers" in proc.stdout


def systems_config(endpoint: str) -> tuple[list[dict[str, str]], set[str]]:
    """Every system folder under mappings/ (the hospital pointed at `endpoint`),
    and every resource type their mapping files declare."""
    systems = []
    resources: set[str] = set()
    for system_yaml in sorted((SOURCE / "mappings").glob("*/system.yaml")):
        folder = system_yaml.parent
        ref = {"path": str(folder)}
        if folder.name == "hospital":
            ref["endpoint"] = endpoint
        systems.append(ref)
        resources |= {p.stem for p in folder.glob("*.yaml") if p.name != "system.yaml"}
    return systems, resources


@dataclass
class Gateway:
    """A `python -m bridge serve` process, auth on, ready when /readyz lists every mapping
    (or the floor, bench/floor.py, served by uvicorn the same way).

    With `workers > 1` it is uvicorn's supervisor and its worker processes: `pids()`
    is the whole tree (for CPU time), `worker_pids()` the processes serving requests.
    """

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    ready_seconds: float = 0.0
    workers: int = 1
    wsdl_cache_cold: bool = True  # no compiled WSDL in the cache when it started

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        return [self.pid, *descendants(self.pid)]

    def worker_pids(self) -> list[int]:
        if self.workers == 1:
            return [self.pid]
        return [p for p in descendants(self.pid) if b"multiprocessing.spawn" in _cmdline(p)]

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def stop(self) -> None:
        terminate(self.process)


def start_gateway(
    run_dir: Path,
    endpoint: str,
    *,
    base_url: str | None,
    issuer: str,
    jwks: dict[str, Any],
    paging_key: str,
    name: str = "gateway",
    port: int | None = None,
    workers: int = 1,
) -> Gateway:
    """Start one gateway and wait until /readyz lists every resource of mappings/.

    `ready_seconds` is the time from the process start to that answer.
    """
    port = port or free_port()
    systems, resources = systems_config(endpoint)
    config = {
        "host": "127.0.0.1",
        "port": port,
        "base_url": base_url or f"http://127.0.0.1:{port}/fhir",
        "systems": systems,
        "paging_key": paging_key,
        "auth": {"mode": "jwt", "issuer": issuer, "jwks": jwks},
        "log_level": "info",
        # Every feature on: the audit trail commits one AuditEvent per request here.
        "store": {"url": f"sqlite:///{run_dir / f'{name}-{port}-store.db'}"},
        # The run's own WSDL cache: its first gateway reads the WSDLs with zeep, the
        # others start warm, as a restarted gateway and every worker does.
        "wsdl_cache_dir": str(run_dir / "wsdl-cache"),
    }
    if workers > 1:
        config["workers"] = workers
    config_path = run_dir / f"{name}-{port}.yaml"
    config_path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    cold = not any((run_dir / "wsdl-cache").glob("*.json"))
    log_path = run_dir / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=SOURCE,
            env=_env(),
        )
    gateway = Gateway(process, port, log_path, workers=workers, wsdl_cache_cold=cold)
    deadline = started + 60
    try:
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the gateway exited at start ({log_path}):\n{tail}")
            try:
                status, body = fetch(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if status == 200 and resources <= set(json.loads(body).get("resources", [])):
                    gateway.ready_seconds = time.perf_counter() - started
                    _all_workers_up(gateway, deadline)
                    return gateway
            except OSError:
                pass
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the gateway was not ready within 60 s; see {log_path}")
            time.sleep(0.005)
    except BaseException:
        gateway.stop()
        raise


def start_floor(log_path: Path) -> Gateway:
    """bench/floor.py on a free port, once it answers `GET /`."""
    port = free_port()
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, str(BENCH / "floor.py"), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    floor = Gateway(process, port, log_path)
    try:
        while process.poll() is None:
            try:
                if fetch(f"http://127.0.0.1:{port}/", timeout=2)[0] == 200:
                    return floor
            except OSError:
                pass
            if time.perf_counter() > started + 20:
                raise RuntimeError(f"the floor did not answer within 20 s; see {log_path}")
            time.sleep(0.01)
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the floor exited at start ({log_path}):\n{tail}")
    except BaseException:
        floor.stop()
        raise


def _all_workers_up(gateway: Gateway, deadline: float) -> None:
    # /readyz answers as soon as one worker listens; the load wants all of them
    # accepting, or its keep-alive connections would all land on the first one.
    if gateway.workers == 1:
        return
    while True:
        started = gateway.log_path.read_text(errors="replace").count("Application startup complete")
        if started >= gateway.workers and len(gateway.worker_pids()) >= gateway.workers:
            return
        if time.perf_counter() > deadline:
            raise RuntimeError(f"not all {gateway.workers} workers started; see {gateway.log_path}")
        time.sleep(0.05)


def new_paging_key() -> str:
    return secrets.token_urlsafe(32)
