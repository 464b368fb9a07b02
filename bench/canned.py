"""A canned-response SOAP backend: the mock hospital's recorded answers, fast.

It answers the EHR's operations (keyed by the ``SOAPAction`` header) with the
XML files ``bench/record.py`` recorded from a real ``bridge mock`` run, so the
gateway, not the backend, is what a benchmark measures. It is a raw asyncio
protocol on uvloop with httptools' C parser: a few µs per call.

- ``Login`` hands out ``canned-<n>`` session ids (each one counted);
- ``FindPatients`` returns the recorded page with cursor ``c1``;
- ``FetchNext`` with cursor ``c<n>`` returns the recorded page with cursor
  ``c<n+1>``, until the recorded ``TotalCount`` is reached, as the mock does;
  from ``c2`` on, the page's MRNs are synthetic and distinct (``9000000 +
  position``), so deep pages hold new patients, as they would for real;
- ``RecordVitals`` (when recorded) answers a new ``VS<n>`` reading id per call;
- ``GET /_stats`` returns the call counters as JSON (``POST /_reset`` clears).

    python bench/canned.py --port 0     # prints "canned backend ready at http://..."
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import signal
import socket
import sys
from pathlib import Path
from typing import cast

import httptools

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OPERATIONS = ("Login", "GetPatient", "FindPatients", "FetchNext", "Logout")
WRITES = ("RecordVitals",)  # recorded only when the mappings write
SESSION = b"@@SESSION@@"
CURSOR = b"@@CURSOR@@"
READING = b"@@READING@@"
_READING_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?Reading[\s>]")
READY = "canned backend ready at "

_FAULT = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n"
    b'<soap11env:Envelope xmlns:soap11env="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soap11env:Body><soap11env:Fault><faultcode>soap11env:Client</faultcode>"
    b"<faultstring>canned backend: unknown SOAPAction</faultstring>"
    b"</soap11env:Fault></soap11env:Body></soap11env:Envelope>"
)


def _response(status: bytes, body: bytes, content_type: bytes, keep_alive: bool) -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type
    head += b"\r\nContent-Length: " + str(len(body)).encode()
    if not keep_alive:
        head += b"\r\nConnection: close"
    return head + b"\r\n\r\n" + body


_TOTAL = re.compile(rb"TotalCount>(\d+)<")
_MRN = re.compile(rb"<(?:[\w.-]+:)?MRN>([^<]*)")  # the text of an opening <MRN> or <x:MRN>
_SLOTS = re.compile(rb"<(?:[\w.-]+:)?MRN>([^<]*)|(" + re.escape(CURSOR) + rb")")


def _template(xml: bytes) -> tuple[list[bytes], list[str]]:
    """Split a page at its MRN texts and its cursor: parts[i], slot[i], ..., parts[-1]."""
    parts, slots, at = [], [], 0
    for m in _SLOTS.finditer(xml):
        group = 2 if m.group(2) is not None else 1
        parts.append(xml[at : m.start(group)])
        slots.append("cursor" if group == 2 else "mrn")
        at = m.end(group)
    parts.append(xml[at:])
    return parts, slots


class Canned:
    """The recorded answers and the counters; no I/O."""

    def __init__(self, fixtures: Path = FIXTURES) -> None:
        meta = json.loads((fixtures / "recorded.json").read_text())
        self.content_type = meta.get("content_type", "text/xml; charset=utf-8").encode()
        self.bodies = {op: (fixtures / f"{op}.response.xml").read_bytes() for op in OPERATIONS}
        for op in WRITES:
            path = fixtures / f"{op}.response.xml"
            if path.exists():
                self.bodies[op] = path.read_bytes()
        self.vitals = self.bodies.get("RecordVitals", b"").split(READING)
        self.readings = 0
        # Split around the placeholders once, so a call only concatenates.
        self.login = self.bodies["Login"].split(SESSION)
        self.next_parts, self.next_slots = _template(self.bodies["FetchNext"])
        self.recorded_mrns = _MRN.findall(self.bodies["FetchNext"])
        self.per_page = max(len(self.recorded_mrns), 1)
        total = _TOTAL.search(self.bodies["FetchNext"])
        self.total = int(total.group(1)) if total else 10**9
        # Every search gets cursor ids of its own, s<k>c1, s<k>c2, ... as legacy systems
        # hand out: an id names one search's cursor, never a position any search shares.
        self.find = self.bodies["FindPatients"].split(CURSOR)
        self.searches = 0
        self.ready = {
            op: {ka: _response(b"200 OK", body, self.content_type, ka) for ka in (True, False)}
            for op, body in (
                ("GetPatient", self.bodies["GetPatient"]),
                ("Logout", self.bodies["Logout"]),
            )
        }
        self.calls: collections.Counter[str] = collections.Counter()
        self.logins = 0

    def answer(self, action: bytes, body: bytes, keep_alive: bool) -> bytes:
        op = action.strip(b'"').decode("latin-1")
        ready = self.ready.get(op)
        if ready is not None:
            self.calls[op] += 1
            return ready[keep_alive]
        if op == "FindPatients":
            self.calls[op] += 1
            self.searches += 1
            answer = (b"s%dc1" % self.searches).join(self.find)
            return _response(b"200 OK", answer, self.content_type, keep_alive)
        if op == "FetchNext":
            self.calls[op] += 1
            return _response(b"200 OK", self._fetch_next(body), self.content_type, keep_alive)
        if op == "RecordVitals" and len(self.vitals) == 2:
            # One new reading id per reading sent (a batch of readings is one call).
            self.calls[op] += 1
            count = max(1, len(_READING_TAG.findall(body)))
            ids = []
            for _ in range(count):
                self.readings += 1
                ids.append(b"VS%08d" % self.readings)
            joined = b"</tns:ReadingId><tns:ReadingId>".join(ids)
            head = self.vitals[0].replace(b"<tns:Accepted>1<", b"<tns:Accepted>%d<" % count)
            answer = head + joined + self.vitals[1]
            return _response(b"200 OK", answer, self.content_type, keep_alive)
        if op == "Login":
            self.calls[op] += 1
            self.logins += 1
            token = f"canned-{self.logins}".encode()
            return _response(b"200 OK", token.join(self.login), self.content_type, keep_alive)
        self.calls["unknown"] += 1
        return _response(b"500 Internal Server Error", _FAULT, self.content_type, keep_alive)

    def _fetch_next(self, body: bytes) -> bytes:
        start = body.find(b"CursorId>")
        n = 1
        search = b"s0"
        if start >= 0:
            start += len(b"CursorId>")
            raw = body[start : body.find(b"<", start)].strip()
            search, _, position = raw.partition(b"c")
            if position.isdigit():
                n = int(position)
        # Cursor s<k>c<n> stands after record n * per_page; this answer holds the page after it.
        first = n * self.per_page
        cursor = search + b"c%d" % (n + 1) if first + self.per_page < self.total else b""
        out = []
        i = 0
        for part, slot in zip(self.next_parts, self.next_slots, strict=False):
            out.append(part)
            if slot == "cursor":
                out.append(cursor)
            elif n == 1:  # the recorded page itself
                out.append(self.recorded_mrns[i])
                i += 1
            else:
                out.append(b"%d" % (9_000_000 + first + i))
                i += 1
        out.append(self.next_parts[-1])
        return b"".join(out)

    def stats(self) -> dict[str, object]:
        return {
            "calls": dict(self.calls),
            "total_calls": sum(v for k, v in self.calls.items() if k != "unknown"),
            "logins": self.logins,
        }

    def reset(self) -> None:
        self.calls.clear()
        self.logins = 0


class _Connection(asyncio.Protocol):
    def __init__(self, canned: Canned) -> None:
        self.canned = canned
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.action = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(_response(b"400 Bad Request", b"", b"text/plain", False))
            self.transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"soapaction":
            self.action = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        keep_alive = self.parser.should_keep_alive()
        if self.url[:2] != b"/_" and self.parser.get_method() == b"POST":
            out = self.canned.answer(self.action, b"".join(self.body), keep_alive)
        elif self.url == b"/_stats":
            stats = json.dumps(self.canned.stats()).encode()
            out = _response(b"200 OK", stats, b"application/json", keep_alive)
        elif self.url == b"/_reset":
            self.canned.reset()
            out = _response(b"200 OK", b"{}", b"application/json", keep_alive)
        else:
            out = _response(b"404 Not Found", b"", b"text/plain", keep_alive)
        self.transport.write(out)
        self._reset()
        if not keep_alive:
            self.transport.close()


async def serve(host: str, port: int, fixtures: Path) -> None:
    canned = Canned(fixtures)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(canned), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"{READY}http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(serve(args.host, args.port, args.fixtures))
    else:
        uvloop.run(serve(args.host, args.port, args.fixtures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
