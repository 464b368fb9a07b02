"""IndexedRouter chooses exactly what Starlette's Router chooses, on the gateway's routes."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Match, Mount, Route, Router

from bridge.routing import IndexedRouter, _shape


def _endpoint(name: str) -> Any:
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{name} {sorted(request.path_params.items())}")

    return endpoint


def _routes() -> list[Any]:
    # The shapes create_app registers, in its order (local routes first).
    table = [
        ("/fhir/Consent", ["POST"]),
        ("/fhir/Consent", ["GET"]),
        ("/fhir/Consent/{rid}", ["GET"]),
        ("/fhir/Consent/{rid}", ["PUT"]),
        ("/fhir/AuditEvent/{rid}", ["GET"]),
        ("/admin/revocations/{rid}", ["DELETE"]),
        ("/fhir/metadata", ["GET"]),
        ("/fhir/_async/{job}", ["GET", "DELETE"]),
        ("/fhir", ["POST"]),
        ("/fhir/", ["POST"]),
        ("/fhir/{rtype}/_search", ["POST"]),
        ("/fhir/{rtype}/{rid}/{op}", ["GET", "POST"]),
        ("/fhir/{rtype}/{rid}", ["GET"]),
        ("/fhir/{rtype}/{rid}", ["PUT", "PATCH"]),
        ("/fhir/{rtype}/{rid}", ["POST"]),
        ("/fhir/{rtype}", ["GET"]),
        ("/fhir/{rtype}", ["POST"]),
        ("/files/{rest:path}", ["GET"]),
        ("/healthz", ["GET"]),
    ]
    routes: list[Any] = [
        Route(path, _endpoint(f"{i}"), methods=methods) for i, (path, methods) in enumerate(table)
    ]
    routes.append(Mount("/static", routes=[Route("/{name}", _endpoint("static"))]))
    return routes


PATHS = [
    "/fhir/Patient/100001",
    "/fhir/Patient/100001/",
    "/fhir/Patient/$match",
    "/fhir/Patient/_search",
    "/fhir/Patient/1/$everything",
    "/fhir/Patient/1/$everything/extra",
    "/fhir/Patient",
    "/fhir/Patient/",
    "/fhir/Consent",
    "/fhir/Consent/c-1",
    "/fhir/AuditEvent/a-1",
    "/fhir/AuditEvent",
    "/fhir/metadata",
    "/fhir/_async/j1",
    "/fhir",
    "/fhir/",
    "/fhir//1",
    "/admin/revocations/r1",
    "/admin/revocations",
    "/files/a/b/c",
    "/static/x",
    "/healthz",
    "/healthz/",
    "/",
    "",
    "/nothing/here",
]


def _serve(router: Router, method: str, path: str, root_path: str = "") -> tuple[int, str, str]:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": root_path + path,
        "root_path": root_path,
        "raw_path": (root_path + path).encode(),
        "query_string": b"",
        "headers": [(b"host", b"gateway.test")],
        "scheme": "http",
        "server": ("gateway.test", 80),
    }
    asyncio.run(router(scope, receive, send))
    headers = dict(sent[0].get("headers", []))
    return (
        sent[0]["status"],
        sent[1].get("body", b"").decode(),
        headers.get(b"location", b"").decode(),
    )


@pytest.mark.parametrize(
    ("method", "path"), list(itertools.product(["GET", "POST", "PUT", "DELETE"], PATHS))
)
def test_the_indexed_router_answers_as_starlettes_router_does(method: str, path: str) -> None:
    routes = _routes()
    assert _serve(IndexedRouter(routes=routes), method, path) == _serve(
        Router(routes=routes), method, path
    )


@pytest.mark.parametrize("path", ["/fhir/Patient/1", "/fhir/Consent/c-1", "/healthz/"])
def test_under_a_root_path_too(path: str) -> None:
    routes = _routes()
    assert _serve(IndexedRouter(routes=routes), "GET", path, "/api") == _serve(
        Router(routes=routes), "GET", path, "/api"
    )


def test_a_read_is_tried_on_the_routes_of_its_shape_only() -> None:
    router = IndexedRouter(routes=_routes())
    assert _serve(router, "GET", "/fhir/Patient/1")[1].startswith("12 ")
    tried = router._candidates((4, "fhir", "Patient"))
    paths = [getattr(r, "path", "") for r in tried]
    assert "/fhir/Consent/{rid}" not in paths and "/fhir/metadata" not in paths
    assert "/fhir/{rtype}/{rid}" in paths


def test_routes_added_later_are_found() -> None:
    router = IndexedRouter(routes=_routes())
    assert _serve(router, "GET", "/fhir/Late/1")[1].startswith("12 ")
    router.routes.insert(0, Route("/fhir/Late/{rid}", _endpoint("late")))
    assert _serve(router, "GET", "/fhir/Late/1")[1].startswith("late ")


def _first_full(routes: Any, scope: dict[str, Any]) -> Any:
    for route in routes:
        if route.matches(scope)[0] is Match.FULL:
            return route
    return None


def test_on_the_gateways_own_routes_every_request_finds_the_same_route(tmp_path: Path) -> None:
    import json

    from bridge.app import create_app
    from bridge.settings import load_settings

    root = Path(__file__).resolve().parents[1]
    systems = [{"path": str(p.parent)} for p in sorted(root.glob("mappings/*/system.yaml"))]
    config = tmp_path / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "systems": systems,
                "auth": {"mode": "off"},
                "paging_key": "k" * 32,
                "admin": {"token": "a" * 32},
                "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
            }
        )
    )
    router = create_app(load_settings(config)).router
    assert isinstance(router, IndexedRouter)
    assert len(router.routes) > 20
    paths = [
        *PATHS,
        "/fhir/.well-known/smart-configuration",
        "/metrics",
        "/readyz",
        "/admin/revocations",
        "/fhir/Observation/obs-1/$lastn",
        "/fhir/Observation/$lastn",
        "/fhir/Slot/_search",
        "/fhir/_async/abc",
    ]
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    found = 0
    for method, path in itertools.product(methods, paths):
        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        chosen = _first_full(router._candidates(_shape(path)), scope)
        assert chosen is _first_full(router.routes, scope), (method, path)
        found += chosen is not None
    assert found > 40


def test_a_route_handler_raising_is_answered_by_the_apps_handlers_once() -> None:
    from starlette.applications import Starlette

    from bridge.routing import route

    caught: list[Request] = []

    async def failing(request: Request) -> PlainTextResponse:
        raise KeyError("x")

    async def handled(request: Request, exc: Exception) -> PlainTextResponse:
        caught.append(request)
        return PlainTextResponse("handled", status_code=409)

    app = Starlette(
        routes=[route("/fhir/{rtype}", failing, methods=["GET"])],
        exception_handlers={KeyError: handled},
    )

    def call(method: str) -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": method,
            "path": "/fhir/Patient",
            "root_path": "",
            "query_string": b"",
            "headers": [],
        }
        asyncio.run(app(scope, receive, send))
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    assert call("GET") == (409, b"handled")
    assert call("HEAD")[0] == 409
    assert call("POST")[0] == 405
    assert len(caught) == 2


def test_a_route_refuses_a_plain_function_as_handler() -> None:
    from bridge.routing import route

    def plain(request: Request) -> PlainTextResponse:
        return PlainTextResponse("")

    with pytest.raises(TypeError, match="async function"):
        route("/fhir/{rtype}", plain, methods=["GET"])  # type: ignore[arg-type]
