"""The one ASGI app of the mock hospital: side door plus every legacy system.

Each legacy system is a WSGI app (spyne) mounted at its own path behind
a2wsgi's thread pool, wrapped so the side door can make it refuse calls.
Adding a system (``/lab``, ``/scheduling``, ...) means one more entry in
:func:`_systems`: a state object, a WSGI app and a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from a2wsgi import WSGIMiddleware
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.mock import ehr as _ehr
from bridge.mock import sidedoor
from bridge.mock.ehr import WsgiApp
from bridge.mock.state import EhrOptions, EhrState, HospitalState, SystemState

__all__ = ["WSGI_WORKERS", "MockSystem", "build_app"]

# Threads per system: enough for 50 concurrent calls plus latency injection
# without queueing behind the pool.
WSGI_WORKERS = 64

_UNAVAILABLE = b"<html><body><h1>503 Service Unavailable</h1></body></html>"


@dataclass(frozen=True, slots=True)
class MockSystem:
    """One legacy system: its name in stats, its URL path, its state and app."""

    name: str
    path: str
    state: SystemState
    wsgi: WsgiApp


class _Refusable:
    """Answers 503 with an HTML page, as a load balancer would, while refusing."""

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
        await self.app(scope, receive, send)


def _systems(options: EhrOptions) -> list[MockSystem]:
    ehr = EhrState(options)
    return [MockSystem("ehr", "/ehr", ehr, _ehr.build_wsgi_app(ehr))]


def build_app(options: EhrOptions | None = None) -> Starlette:
    """The mock hospital as an ASGI app; ``app.state.hospital`` holds its state."""
    systems = _systems(options or EhrOptions())
    hospital = HospitalState([s.state for s in systems])
    ehr = hospital.system("ehr")
    assert isinstance(ehr, EhrState)

    routes = sidedoor.routes(hospital, ehr)
    for system in systems:
        # a2wsgi types environ as a TypedDict and the ASGI scope as a union;
        # both are the plain dicts Starlette passes, so the casts are safe.
        wsgi = cast(ASGIApp, WSGIMiddleware(cast(Any, system.wsgi), workers=WSGI_WORKERS))
        # A Route, not a Mount: Mount("/ehr") would redirect POST /ehr to /ehr/.
        routes.append(Route(system.path, endpoint=_Refusable(wsgi, system.state)))
    app = Starlette(routes=routes)
    app.state.hospital = hospital
    return app
