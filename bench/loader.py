"""A small HTTP/1.1 load generator: keep-alive connections on uvloop, for a fixed time.

`run.py` uses wrk when it is installed; this is the fallback for every
scenario, and the tool for the two that need state per connection:

- ``fixed``: one request, repeated on every connection (what wrk does);
- ``walk``: a FHIR search, then its ``next`` links, ``pages`` pages deep, over
  and over; latency is kept per page number;
- ``soap-walk``: the same walk done straight against the SOAP backend: page 1
  is ``FindPatients`` plus ``calls_per_page - 1`` ``FetchNext`` calls, every
  later page ``calls_per_page`` ``FetchNext`` calls on the cursor the last
  answer named; one page is one measured operation;
- ``soap-seq``: one operation is a fixed sequence of SOAP calls (e.g. the 100
  ``RecordVitals`` calls of a batch of 100 readings).

With one connection and ``cpu_pid``, the gateway's CPU time per page number is
read from ``/proc/<pid>/schedstat`` around every request.

    python bench/loader.py spec.json     # writes the result JSON to spec["out"]
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httptools

GRACE = 15.0  # seconds after the window for answers in flight; then they count as stuck
NEXT = re.compile(rb'"relation":"next","url":"([^"]+)"')
CURSOR = re.compile(rb"CursorId>([^<]+)<")


class _Closed(Exception):
    pass


class _Conn(asyncio.Protocol):
    """One keep-alive connection; `send` returns (status, body) of the answer."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(_Closed())

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(exc)
            if self.transport is not None:
                self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), body))

    async def send(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


def _request(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _path_of(url: bytes) -> str:
    text = url.decode().replace("\\u0026", "&")
    if "://" in text:
        text = "/" + text.split("://", 1)[1].split("/", 1)[1]
    return text


@dataclass
class _Stats:
    latencies: list[int] = field(default_factory=list)  # ns, one per operation
    by_page: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    cpu_by_page: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    http_requests: int = 0
    bad_status: int = 0
    errors: int = 0
    stuck: int = 0
    first_bad: str = ""


class _Sched:
    def __init__(self, pid: int) -> None:
        import os

        self._os = os
        self._fd = os.open(f"/proc/{pid}/schedstat", os.O_RDONLY)

    def ns(self) -> int:
        return int(self._os.pread(self._fd, 128, 0).split()[0])


class Loader:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.targets = [(str(h), int(p)) for h, p in spec["targets"]]
        self.connections = int(spec["connections"])
        self.duration = float(spec["duration"])
        self.warmup = float(spec.get("warmup", 0))
        self.window_start = 0.0
        self.cpu0 = self.cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        self.mode = spec.get("mode", "fixed")
        self.stats = _Stats()
        self.deadline = 0.0
        self.sched = _Sched(int(spec["cpu_pid"])) if spec.get("cpu_pid") else None

    async def _connect(self, index: int) -> tuple[_Conn, str]:
        host, port = self.targets[index % len(self.targets)]
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Conn, host, port)
        return conn, f"{host}:{port}"

    def _record(self, started: int, status: int, page: int = 0, cpu: int | None = None) -> None:
        now = time.monotonic()
        if now > self.deadline or now < self.window_start:
            return  # answered during the warm-up or after the window: not counted
        elapsed = time.perf_counter_ns() - started
        st = self.stats
        if status >= 400:
            st.bad_status += 1
        st.latencies.append(elapsed)
        if page:
            st.by_page[page].append(elapsed)
            if cpu is not None:
                st.cpu_by_page[page].append(cpu)

    async def _fixed(self, conn: _Conn, host: str) -> None:
        r = self.spec["request"]
        data = _request(r["method"], r["path"], host, r.get("headers", {}), _body(r))
        while time.monotonic() < self.deadline:
            started = time.perf_counter_ns()
            status, body = await conn.send(data)
            self.stats.http_requests += 1
            self._note(status, body)
            self._record(started, status)

    def _first_walk(self, index: int, pages: int) -> int:
        """Pages in a connection's first walk: staggered, so that the connections are
        spread over every page number when the window opens, not all on the same one."""
        return (index * pages) // self.connections or pages

    async def _walk(self, conn: _Conn, host: str, index: int) -> None:
        """Walks of `pages` pages through the next links, again and again.

        Every other walk goes one page further, counted as a request but under no
        page number. The gateway's own periodic work follows what the pages do: the
        audit trail moves its patient links every 1,000 (20 pages of 50), and walks
        of exactly 20 pages at one connection would land it on the same page number
        every time, making that page look several times dearer than the others.
        With the extra page it moves from one page number to the next, and every
        page number's mean carries about the same share of it."""
        r = self.spec["request"]
        headers = r.get("headers", {})
        pages = int(self.spec["pages"])
        length = self._first_walk(index, pages)
        walks = 0
        while time.monotonic() < self.deadline:
            path = r["path"]
            for page in range(1, length + 1):
                before = self.sched.ns() if self.sched else 0
                started = time.perf_counter_ns()
                status, body = await conn.send(_request("GET", path, host, headers, b""))
                cpu = self.sched.ns() - before if self.sched else None
                self.stats.http_requests += 1
                self._note(status, body)
                self._record(started, status, page if page <= pages else 0, cpu)
                if page == length or time.monotonic() >= self.deadline:
                    break
                match = NEXT.search(body)
                if status != 200 or match is None:
                    break  # start the walk again
                path = _path_of(match.group(1))
            walks += 1
            length = pages + walks % 2

    async def _soap_walk(self, conn: _Conn, host: str, index: int) -> None:
        w = self.spec["soap_walk"]
        sessions = w["sessions"]
        session = sessions[index % len(sessions)].encode()
        headers = w["headers"]
        path = w["path"]
        find = Path(w["find_file"]).read_bytes().replace(b"@@SESSION@@", session)
        fetch = Path(w["next_file"]).read_bytes().replace(b"@@SESSION@@", session)
        k = int(w["calls_per_page"])
        pages = int(self.spec["pages"])
        length = self._first_walk(index, pages)

        async def call(action: str, body: bytes) -> tuple[int, bytes]:
            h = {**headers, "SOAPAction": f'"{action}"'}
            status, answer = await conn.send(_request("POST", path, host, h, body))
            self.stats.http_requests += 1
            self._note(status, answer)
            return status, answer

        while time.monotonic() < self.deadline:
            cursor = b""
            for page in range(1, length + 1):
                started = time.perf_counter_ns()
                worst = 200
                for i in range(k):
                    if page == 1 and i == 0:
                        status, answer = await call("FindPatients", find)
                    else:
                        status, answer = await call(
                            "FetchNext", fetch.replace(b"@@CURSOR@@", cursor)
                        )
                    worst = max(worst, status)
                    match = CURSOR.search(answer)
                    cursor = match.group(1) if match else b""
                    if status != 200 or not cursor:
                        break
                self._record(started, worst, page)
                if worst != 200 or not cursor or time.monotonic() >= self.deadline:
                    break
            length = pages

    async def _soap_seq(self, conn: _Conn, host: str, index: int) -> None:
        q = self.spec["soap_seq"]
        session = q["sessions"][index % len(q["sessions"])].encode()
        calls = []
        for action, body_file in q["calls"]:
            body = Path(body_file).read_bytes().replace(b"@@SESSION@@", session)
            headers = {**q["headers"], "SOAPAction": f'"{action}"'}
            calls.append(_request("POST", q["path"], host, headers, body))
        calls *= int(q.get("repeat", 1))
        while time.monotonic() < self.deadline:
            started = time.perf_counter_ns()
            worst = 200
            for data in calls:
                status, answer = await conn.send(data)
                self.stats.http_requests += 1
                self._note(status, answer)
                worst = max(worst, status)
            self._record(started, worst)

    def _note(self, status: int, body: bytes) -> None:
        if status >= 400 and not self.stats.first_bad:
            self.stats.first_bad = f"HTTP {status}: {body[:300]!r}"

    async def _worker(self, index: int) -> None:
        while time.monotonic() < self.deadline:
            try:
                conn, host = await self._connect(index)
            except OSError:
                self.stats.errors += 1
                await asyncio.sleep(0.01)
                continue
            try:
                if self.mode == "fixed":
                    await self._fixed(conn, host)
                elif self.mode == "walk":
                    await self._walk(conn, host, index)
                elif self.mode == "soap-walk":
                    await self._soap_walk(conn, host, index)
                elif self.mode == "soap-seq":
                    await self._soap_seq(conn, host, index)
                else:
                    raise ValueError(f"unknown mode {self.mode!r}")
            except (_Closed, OSError, httptools.HttpParserError):
                self.stats.errors += 1
            finally:
                if conn.transport is not None:
                    conn.transport.close()

    async def _clock(self) -> None:
        # Tells the caller (run.py) when the window opens and closes, so it reads
        # the gateway's CPU time and the backend's counters at those moments; the
        # walks go on across the warm-up boundary, so deep pages are reached.
        await asyncio.sleep(max(self.window_start - time.monotonic(), 0))
        print("start", flush=True)
        self.cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(max(self.deadline - time.monotonic(), 0))
        print("stop", flush=True)
        self.cpu1 = resource.getrusage(resource.RUSAGE_SELF)

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.window_start = started + self.warmup
        self.deadline = self.window_start + self.duration
        clock = asyncio.ensure_future(self._clock())
        workers = [asyncio.ensure_future(self._worker(i)) for i in range(self.connections)]
        # Bounded: a request the server never answers is given up GRACE s after the window.
        _, pending = await asyncio.wait(workers, timeout=self.warmup + self.duration + GRACE)
        for task in pending:
            task.cancel()
        self.stats.stuck = len(pending)
        await clock
        elapsed = self.duration
        cpu0, cpu1 = self.cpu0, self.cpu1
        loader_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        return self._result(elapsed, loader_cpu)

    def _result(self, elapsed: float, loader_cpu: float) -> dict[str, Any]:
        st = self.stats
        out: dict[str, Any] = {
            "tool": "python-loader",
            "requests": len(st.latencies),
            "http_requests": st.http_requests,
            "duration_s": elapsed,
            "rps": len(st.latencies) / elapsed if elapsed else 0.0,
            **percentiles(st.latencies),
            "errors": {"socket": st.errors, "status": st.bad_status, "stuck": st.stuck},
            "first_bad": st.first_bad,
            "loader_cpu_s": round(loader_cpu, 3),
        }
        if st.by_page:
            out["pages"] = {
                str(page): {
                    "count": len(values),
                    **percentiles(values),
                    **(
                        {"cpu_us": sum(st.cpu_by_page[page]) / len(st.cpu_by_page[page]) / 1e3}
                        if st.cpu_by_page.get(page)
                        else {}
                    ),
                }
                for page, values in sorted(st.by_page.items())
            }
        return out


def _body(r: dict[str, Any]) -> bytes:
    if r.get("body_file"):
        return Path(r["body_file"]).read_bytes()
    return str(r.get("body", "")).encode()


def percentiles(values_ns: list[int]) -> dict[str, float]:
    if not values_ns:
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
    v = sorted(values_ns)

    def at(q: float) -> float:
        return v[min(len(v) - 1, int(q * len(v)))] / 1e6

    return {
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": v[-1] / 1e6,
        "mean_ms": sum(v) / len(v) / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    try:
        import uvloop

        result = uvloop.run(Loader(spec).run())
    except ImportError:  # pragma: no cover
        result = asyncio.run(Loader(spec).run())
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
