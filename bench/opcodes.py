"""Python bytecodes executed per request: by concern, by module and by function.

A count of the interpreter's work that repeats within ~0.1% from one run to
the next (three runs each: 6,614-6,615 a read at one connection, 6,684-6,686
at 50), where CPU time varies by 10-30% and callgrind's instruction count
(`bench/inproc.py --instructions`) says how much but not where. It counts what
runs as Python bytecode only: lxml, SQLite, orjson, uvloop and the kernel are
not in it (their cost shows in `--instructions`, perf and py-spy), and a
bytecode that calls into them counts once. Calls cost more than other
bytecodes, so a share here is a guide to where Python work is, not a share of
CPU.

    python bench/inproc.py read -n 1000 -c 1 --opcodes 30
    python bench/inproc.py read -n 3000 --opcodes 30 --source /tmp/base
    python bench/inproc.py search -n 200 --opcodes 30

It traces the thread that runs the event loop (`sys.settrace` with
`f_trace_opcodes`), ~10-15x slower while on: a few hundred to a few thousand
requests are enough. Tasks already running when the count starts (the
gateway's pollers, which run by the clock and would be counted ten times over
at the traced speed) are left out. The requests' tasks, what they start and
the loop's callbacks are counted: a legacy answer arriving, and also the
timers that run by the clock (the metrics' flush, the audit commit's linger),
which is why a count varies a little with the requests at once (`-c`).
Code compiled from a string (a dataclass's generated `__init__`, `__eq__`) is
counted as its caller's.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from bench.profile import area

__all__ = ["CONCERNS", "OpcodeCount", "concern"]

# What a request's Python work is for, by where its code lives (first match wins).
CONCERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("HTTP server", ("bridge/server.py", "uvicorn", "httptools")),
    (
        "request id, access log, metrics",
        ("bridge/middleware/requestid.py", "bridge/middleware/accesslog.py", "bridge/metrics.py"),
    ),
    (
        "limits",
        (
            "bridge/middleware/limits.py",
            "bridge/middleware/ratelimit.py",
            "bridge/middleware/status.py",
        ),
    ),
    ("auth and scopes", ("bridge/auth/", "bridge/privacy.py", "bridge/consent")),
    ("audit", ("bridge/audit.py", "bridge/auditevent.py", "bridge/store/")),
    ("routing and Starlette", ("bridge/routing.py", "starlette")),
    ("FHIR interaction", ("bridge/app.py", "bridge/gateway/", "bridge/fhir/")),
    ("SOAP call", ("bridge/soap/", "bridge/busypoll.py")),
    ("mapping", ("bridge/mapping/", "<mapping")),
    ("asyncio", ("stdlib asyncio",)),
    ("the harness (bench/)", ("bench/",)),
)


def concern(where: str) -> str:
    """The concern of an area as `bench.profile.area` names it."""
    if "/bench/" in where:
        where = "bench/" + where.rsplit("/bench/", 1)[1]
    for name, prefixes in CONCERNS:
        if where.startswith(prefixes):
            return name
    return "other"


class OpcodeCount:
    """Counts the bytecodes the calling thread executes between `start` and `stop`."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.counts: Counter[CodeType] = Counter()
        self._background: set[asyncio.Task[Any]] = set()

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        if event == "call":
            loop = asyncio._get_running_loop()
            if loop is None or asyncio.current_task(loop) in self._background:
                return None
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            if code.co_filename == "<string>" and frame.f_back is not None:
                code = frame.f_back.f_code  # generated (a dataclass's methods): its caller's
            self.counts[code] += 1
        return self._trace

    def start(self) -> None:
        """Count from now, in the running loop's thread (outside a loop: nothing)."""
        loop = asyncio._get_running_loop()
        self._background = set(asyncio.all_tasks(loop)) if loop is not None else set()
        sys.settrace(self._trace)

    def stop(self) -> None:
        sys.settrace(None)

    def report(self, requests: int, top: int) -> str:
        """Per request: the total, then by concern, by module and by function (top N)."""
        total = sum(self.counts.values())
        by_concern: Counter[str] = Counter()
        by_area: Counter[str] = Counter()
        by_func: Counter[str] = Counter()
        for code, n in self.counts.items():
            where = area(code.co_filename, self.source)
            by_concern[concern(where)] += n
            by_area[where] += n
            by_func[f"{code.co_qualname} ({where}:{code.co_firstlineno})"] += n

        def table(title: str, counter: Counter[str], rows: int) -> list[str]:
            out = ["", f"| bytecodes | share | {title} |", "|---:|---:|---|"]
            for name, n in counter.most_common(rows):
                out.append(f"| {n / requests:,.0f} | {100 * n / max(1, total):.1f}% | {name} |")
            return out

        lines = [
            f"{total / max(1, requests):,.0f} Python bytecodes a request ({requests} requests)"
        ]
        lines += table("concern", by_concern, len(CONCERNS) + 1)
        lines += table("module", by_area, top)
        lines += table("function", by_func, top)
        return "\n".join(lines)
