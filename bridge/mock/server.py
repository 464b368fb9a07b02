"""The one ASGI app of the mock hospital: side door plus every legacy system.

Each legacy system is a WSGI app (spyne) mounted at its own path behind
a2wsgi's thread pool, wrapped so the side door can make it refuse calls.
Adding a system means a state class, a service module, an entry in
:data:`bridge.mock.catalog.SYSTEMS` and one line in :func:`_wsgi_apps`.
"""

from __future__ import annotations

import gc
import logging
from typing import Any, cast

from a2wsgi import WSGIMiddleware
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.mock import billing, ehr, lab, pharmacy, scheduling, sidedoor
from bridge.mock.catalog import SYSTEMS
from bridge.mock.hospital_state import Hospital
from bridge.mock.options import MockOptions
from bridge.mock.soapkit import DROP_HEADER, WsgiApp
from bridge.mock.state import SystemState
from bridge.mock.views import routes as view_routes

__all__ = ["WSGI_WORKERS", "build_app"]

# Threads per system: enough for 50 concurrent calls plus latency injection
# without queueing behind the pool.
WSGI_WORKERS = 64

_UNAVAILABLE = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
_DROP = DROP_HEADER.lower().encode()


class _DroppedOnPurpose(Exception):
    """Raised after a response started, so uvicorn closes the connection mid-answer."""


class _QuietDrops(logging.Filter):
    # uvicorn logs every exception of an app; these are the mock's own doing.
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _DroppedOnPurpose)


class _Refusable:
    """Answers 503 with an HTML page, as a load balancer would, while refusing;
    drops the connection of an answer marked with ``DROP_HEADER``."""

    def __init__(self, app: ASGIApp, state: SystemState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.state.refusing():
            self.state.record_refused()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"text/html; charset=utf-8"),
                        (b"content-length", str(len(_UNAVAILABLE)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _UNAVAILABLE})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        dropped = False

        async def maybe_drop(message: Any) -> None:
            nonlocal dropped
            if message["type"] == "http.response.start" and any(
                name.lower() == _DROP for name, _ in message.get("headers", ())
            ):
                dropped = True
                # Promise a body, then never send it: the client sees the
                # connection break in the middle of the answer.
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"text/xml"), (b"content-length", b"512")],
                    }
                )
                return
            if not dropped:
                await send(message)

        await self.app(scope, receive, maybe_drop)
        if dropped:
            raise _DroppedOnPurpose()


def _wsgi_apps(hospital: Hospital) -> dict[str, WsgiApp]:
    return {
        "ehr": ehr.build_wsgi_app(hospital.ehr),
        "lab": lab.build_wsgi_app(hospital.lab),
        "scheduling": scheduling.build_wsgi_app(hospital.scheduling),
        "pharmacy": pharmacy.build_wsgi_app(hospital.pharmacy),
        "billing": billing.build_wsgi_app(hospital.billing),
    }


def build_app(options: MockOptions | None = None) -> Starlette:
    """The mock hospital as an ASGI app; ``app.state.hospital`` holds its state."""
    hospital = Hospital(options)
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    # The generated hospital never changes: move it out of the cyclic GC's
    # sight, so collections during requests do not rescan it.
    gc.collect()
    gc.freeze()

    routes = [*sidedoor.routes(hospital), *view_routes(hospital)]
    apps = _wsgi_apps(hospital)
    for spec in SYSTEMS:
        state = hospital.system(spec.name)
        # a2wsgi types environ as a TypedDict and the ASGI scope as a union;
        # both are the plain dicts Starlette passes, so the casts are safe.
        wsgi = cast(ASGIApp, WSGIMiddleware(cast(Any, apps[spec.name]), workers=WSGI_WORKERS))
        # A Route, not a Mount: Mount("/ehr") would redirect POST /ehr to /ehr/.
        routes.append(Route(spec.path, endpoint=_Refusable(wsgi, state)))
    app = Starlette(routes=routes)
    app.state.hospital = hospital
    return app
