"""Load generators behind one call: `Driver.run(Load) -> result dict`.

`Wrk` drives wrk (Debian's ``wrk`` package, LuaJIT scripting) and falls back
to the Python loader for the walks, which need state per connection. `Python`
runs ``bench/loader.py`` for everything. Both return the same keys: requests,
duration_s, rps, p50_ms, p90_ms, p99_ms, max_ms, errors, loader_cpu_s, tool.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


@dataclass
class Load:
    """One bounded load: these connections, split evenly over `targets`, for `duration` s."""

    targets: list[tuple[str, int]]
    connections: int
    duration: int
    method: str = "GET"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    body_file: str | None = None
    mode: str = "fixed"  # fixed | walk | soap-walk | soap-seq (see loader.py)
    pages: int = 0
    soap_walk: dict[str, Any] | None = None
    soap_seq: dict[str, Any] | None = None
    cpu_pid: int | None = None


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


Hook = Callable[[], None]


def _nothing() -> None:
    pass


class Python:
    name = "python-loader"

    def run(
        self,
        load: Load,
        workdir: Path,
        tag: str,
        *,
        warmup: int = 0,
        on_start: Hook = _nothing,
        on_stop: Hook = _nothing,
    ) -> dict[str, Any]:
        """Run `load` after `warmup` s; `on_start`/`on_stop` run as the window opens/closes."""
        spec = {
            "targets": load.targets,
            "connections": load.connections,
            "duration": load.duration,
            "warmup": warmup,
            "mode": load.mode,
            "pages": load.pages,
            "request": {
                "method": load.method,
                "path": load.path,
                "headers": load.headers,
                "body_file": load.body_file,
            },
            "soap_walk": load.soap_walk,
            "soap_seq": load.soap_seq,
            "cpu_pid": load.cpu_pid if load.connections == 1 else None,
            "out": str(workdir / f"{tag}.out.json"),
        }
        spec_path = workdir / f"{tag}.loader.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.Popen(
            [sys.executable, str(BENCH / "loader.py"), str(spec_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        seen = []
        # The loader bounds itself; this is the backstop if it does not.
        watchdog = threading.Timer(load.duration + warmup + 90, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                word = line.strip()
                seen.append(word)
                if word == "start":
                    on_start()
                elif word == "stop":
                    on_stop()
            proc.wait(timeout=load.duration + warmup + 60)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if proc.returncode != 0 or seen[-2:] != ["start", "stop"]:
            raise RuntimeError(f"bench/loader.py failed ({proc.returncode}), said {seen}")
        result: dict[str, Any] = json.loads(Path(spec["out"]).read_text())
        return result


def _lua(text: str) -> str:
    assert "]==]" not in text
    return f"[==[{text}]==]"


_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  local f = assert(io.open(OUT, "w"))
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "p50_us": %.1f, "p90_us": %.1f, ' ..
    '"p99_us": %.1f, "max_us": %.1f, "mean_us": %.1f}',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
  f:close()
end
"""


class Wrk:
    name = "wrk"

    def __init__(self) -> None:
        self.fallback = Python()

    @staticmethod
    def available() -> bool:
        return shutil.which("wrk") is not None

    def script(self, load: Load, out: Path) -> str:
        lines = [f"OUT = {_lua(str(out))}", f"wrk.method = {_lua(load.method)}"]
        lines += [f"wrk.headers[ {_lua(k)} ] = {_lua(v)}" for k, v in load.headers.items()]
        if load.body_file:
            lines.append(
                f"local f = assert(io.open({_lua(load.body_file)}, 'rb')); "
                "wrk.body = f:read('*a'); f:close()"
            )
        targets = ", ".join(f"{{{_lua(h)}, {_lua(str(p))}}}" for h, p in load.targets)
        # One address per thread, round robin: connections split evenly over targets.
        lines += [
            f"local targets = {{{targets}}}",
            "local n = 0",
            "function setup(thread)",
            "  local t = targets[(n % #targets) + 1]",
            "  n = n + 1",
            "  thread.addr = wrk.lookup(t[1], t[2])[1]",
            "end",
        ]
        return "\n".join(lines) + "\n" + _DONE

    def run(
        self,
        load: Load,
        workdir: Path,
        tag: str,
        *,
        warmup: int = 0,
        on_start: Hook = _nothing,
        on_stop: Hook = _nothing,
    ) -> dict[str, Any]:
        if load.mode != "fixed":
            return self.fallback.run(
                load, workdir, tag, warmup=warmup, on_start=on_start, on_stop=on_stop
            )
        if warmup:
            self._wrk(replace(load, duration=warmup), workdir, tag + "-warmup")
        on_start()
        result = self._wrk(load, workdir, tag)
        on_stop()
        return result

    def _wrk(self, load: Load, workdir: Path, tag: str) -> dict[str, Any]:
        out = workdir / f"{tag}.wrk.json"
        script = workdir / f"{tag}.lua"
        script.write_text(self.script(load, out))
        threads = max(len(load.targets), min(load.connections, 2))
        if load.connections % threads:
            threads = len(load.targets)
        host, port = load.targets[0]
        cpu0 = _children_cpu()
        proc = subprocess.run(
            [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(load.connections),
                "-d",
                f"{load.duration}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                f"http://{host}:{port}{load.path}",
            ],
            capture_output=True,
            text=True,
            timeout=load.duration + 60,
        )
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
        raw = json.loads(out.read_text())
        duration = raw["duration_us"] / 1e6
        errors = raw["errors"]
        return {
            "tool": "wrk",
            "requests": raw["requests"],
            "duration_s": duration,
            "rps": raw["requests"] / duration if duration else 0.0,
            "p50_ms": raw["p50_us"] / 1e3,
            "p90_ms": raw["p90_us"] / 1e3,
            "p99_ms": raw["p99_us"] / 1e3,
            "max_ms": raw["max_us"] / 1e3,
            "mean_ms": raw["mean_us"] / 1e3,
            "errors": {
                "socket": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
                "status": errors["status"],
            },
            "loader_cpu_s": round(_children_cpu() - cpu0, 3),
        }


def pick(force_python: bool = False) -> Wrk | Python:
    if not force_python and Wrk.available():
        return Wrk()
    return Python()


__all__ = ["Load", "Python", "Wrk", "pick"]
