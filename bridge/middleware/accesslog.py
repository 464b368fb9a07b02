"""One structured log line per request, free of patient data.

Only the method, the route's template (never the path: ids are identifiers),
the status, the duration and the request id are logged.

When the line would only reach the JSON stream handler `configure_logging`
installs (the way `bridge serve` runs), it is serialised with one
`orjson.dumps` and written to that stream directly: the same line as the
handler would write, for ~3 µs instead of the ~35 µs of a `LogRecord`, the
formatter and `extra=`; the lines of one turn of the event loop are written
with one `write` at its end. Any other logging set-up (filters, other handlers,
tests capturing records) gets the record through `logging` as before.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.logs import JsonFormatter
from bridge.middleware.status import STATUS, noting

log = logging.getLogger("bridge.access")


def _direct_handler() -> logging.StreamHandler | None:  # type: ignore[type-arg]
    """The one JSON stream handler every access line goes to, if that is all there is."""
    logger: logging.Logger | None = log
    handler = None
    while logger is not None:
        if logger.filters:
            return None
        if logger.handlers:
            if handler is not None or len(logger.handlers) != 1:
                return None
            handler = logger.handlers[0]
        if not logger.propagate:
            break
        logger = logger.parent
    if (
        type(handler) is not logging.StreamHandler
        or handler.filters
        or handler.level > logging.INFO
        or type(handler.formatter) is not JsonFormatter
    ):
        return None
    return handler


_second = [-1, ""]  # the formatted time of the last whole second written


def _write(handler: logging.StreamHandler, fields: dict[str, object]) -> None:  # type: ignore[type-arg]
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[0] = second
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    stamp = f"{_second[1]}.{int((now - second) * 1000):03d}Z"
    line = orjson.dumps(
        {"time": stamp, "level": "info", "logger": "bridge.access", "message": "request", **fields}
    )
    _lines.append(line.decode() + handler.terminator)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop: write it now
        _flush(handler)
        return
    if _flushing[0] is not loop:
        # The lines of one turn of the event loop go out in one write at its end
        # (on a loop that stopped before its flush ran, the next loop takes them).
        _flushing[0] = loop
        loop.call_soon(_flush, handler)


_lines: list[str] = []  # written since the last flush
_flushing: list[asyncio.AbstractEventLoop | None] = [None]  # the loop a flush is due on


def _flush(handler: logging.StreamHandler) -> None:  # type: ignore[type-arg]
    _flushing[0] = None
    text = "".join(_lines)
    _lines.clear()
    handler.acquire()
    try:
        handler.stream.write(text)
        handler.flush()
    except (OSError, ValueError):  # a closed or broken stream: as logging would, go on
        handler.handleError(logging.makeLogRecord({"msg": "access log"}))
    finally:
        handler.release()


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state, send = noting(scope, send)
        try:
            await self.app(scope, receive, send)
        finally:
            if log.isEnabledFor(logging.INFO):
                route = scope.get("route")
                fields: dict[str, object] = {
                    "request_id": state.get("request_id", "-"),
                    "method": scope["method"],
                    "route": getattr(route, "path", "-"),
                    "resource": scope.get("path_params", {}).get("rtype", "-"),
                    "status": state[STATUS],
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                }
                handler = _direct_handler()
                if handler is not None:
                    _write(handler, fields)
                else:
                    log.info("request", extra=fields)
