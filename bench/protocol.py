"""What `bridge serve`'s HTTP protocol costs a request, apart from the gateway's app.

uvicorn's httptools protocol as bridge/server.py runs it (`HttpProtocol`, with
the options `bridge serve` passes), on a transport that records its writes (no
socket, no event-loop I/O), answering keep-alive GETs with a trivial ASGI app:
what is left is the protocol's own Python (parsing callbacks, the scope, the
request-response cycle, the answer's head, the keep-alive timer) and the task
each request runs in. It prints CPU µs a request, or with `--instructions` the
instructions a request executes (valgrind's callgrind: two runs of different
lengths, their difference divided by the requests between them, so start-up
cancels out; ~0.1% from run to run).

    .venv/bin/python bench/protocol.py                        # CPU µs a request
    .venv/bin/python bench/protocol.py --instructions         # instructions a request
    .venv/bin/python bench/protocol.py --instructions --source /tmp/snapshot
    .venv/bin/python bench/protocol.py --proxy-headers        # as with trusted_proxies set
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REQUEST = b"GET /fhir/Patient/100001 HTTP/1.1\r\nHost: gateway\r\nAccept: */*\r\n\r\n"
BODY = b'{"resourceType":"Patient","id":"100001"}'


class _Recording:
    """A transport that keeps nothing: each write is counted and dropped."""

    def __init__(self) -> None:
        self.writes = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes += 1

    def writelines(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def _app(scope: Any, receive: Any, send: Any) -> None:
    headers = [
        (b"content-type", b"application/fhir+json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"x-request-id", b"0123456789abcdef"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


async def _serve(n: int, rounds: int, proxy_headers: bool) -> list[float]:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from bridge.server import HttpProtocol

    config = Config(
        app=_app,
        http=HttpProtocol,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=proxy_headers,
    )
    config.load()
    state = ServerState()
    protocol = HttpProtocol(config, state, {}, _loop=asyncio.get_running_loop())
    transport = _Recording()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    per_request = []
    for _ in range(rounds):
        cpu = time.process_time()
        for _ in range(n):
            protocol.data_received(REQUEST)
            while state.tasks:
                await asyncio.gather(*state.tasks)
        per_request.append((time.process_time() - cpu) / n * 1e6)
    protocol.connection_lost(None)
    assert transport.writes >= n * rounds, "answers were not written"
    return per_request


def _run(n: int, rounds: int, proxy_headers: bool) -> list[float]:
    import uvloop

    return uvloop.run(_serve(n, rounds, proxy_headers))


def _instructions(args: argparse.Namespace) -> float:
    counts = []
    for n in (args.n, args.n * 6):
        command = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "-n",
            str(n),
            "--rounds",
            "1",
            *(["--source", args.source] if args.source else []),
            *(["--proxy-headers"] if args.proxy_headers else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if found is None:
            raise SystemExit(f"no instruction count from valgrind:\n{done.stderr[-2000:]}")
        counts.append(int(found.group(1).replace(",", "")))
    return (counts[1] - counts[0]) / (args.n * 5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="requests a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instructions", action="store_true", help="count under valgrind")
    parser.add_argument("--proxy-headers", action="store_true", help="X-Forwarded-* read")
    parser.add_argument("--source", help="run bridge from this tree (a snapshot)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.source).resolve() if args.source else ROOT))
    if args.instructions:
        if args.n > 5_000:
            args.n = 2_000
        per = _instructions(args)
        print(f"HTTP protocol alone: {per / 1000:.1f} k instructions a request (callgrind)")
        return 0
    figures = _run(args.n, args.rounds, args.proxy_headers)
    print("HTTP protocol alone: " + ", ".join(f"{f:.2f}" for f in figures) + " µs a request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
