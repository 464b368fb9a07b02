"""One structured log line per request, free of patient data.

Only the method, the route's template (never the path: ids are identifiers),
the status, the duration and the request id are logged.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("bridge.access")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            if log.isEnabledFor(logging.INFO):
                route = scope.get("route")
                template = getattr(route, "path", "-")
                log.info(
                    "request",
                    extra={
                        "request_id": scope.get("state", {}).get("request_id", "-"),
                        "method": scope["method"],
                        "route": template,
                        "resource": scope.get("path_params", {}).get("rtype", "-"),
                        "status": status,
                        "ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
