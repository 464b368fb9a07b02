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
        ("/items/{n:int}", ["GET"]),
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
    "/items/7",
    "/items/x",
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
    paths = [getattr(r, "path", "") for r, _ in tried]
    assert "/fhir/Consent/{rid}" not in paths and "/fhir/metadata" not in paths
    assert "/fhir/{rtype}/{rid}" in paths


@pytest.mark.parametrize("path", ["/t1/fhir/Patient/1", "/t1/fhir/Patient", "/t1/items/3"])
def test_under_a_mount_with_parameters_of_its_own(path: str) -> None:
    # The mount's parameters come first; the route's are added to them.
    def app(router: type[Router]) -> Router:
        return Router(routes=[Mount("/{tenant}", app=router(routes=_routes()))])

    indexed = _serve(app(IndexedRouter), "GET", path)
    assert indexed == _serve(app(Router), "GET", path)
    assert "('tenant', 't1')" in indexed[1]


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
        chosen = _first_full([r for r, _ in router._candidates(_shape(path))], scope)
        assert chosen is _first_full(router.routes, scope), (method, path)
        found += chosen is not None
    assert found > 40


def _exchange(app: Any, method: str, path: str) -> tuple[int | None, bytes, str | None]:
    """(status, body, the exception the app raised, by name) of one request."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    raised = None
    try:
        asyncio.run(app(scope, receive, send))
    except Exception as exc:  # what the server would log
        raised = type(exc).__name__
    status = sent[0]["status"] if sent else None
    return status, b"".join(m.get("body", b"") for m in sent[1:]), raised


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

    assert _exchange(app, "GET", "/fhir/Patient") == (409, b"handled", None)
    assert _exchange(app, "HEAD", "/fhir/Patient")[0] == 409
    assert _exchange(app, "POST", "/fhir/Patient")[0] == 405
    assert len(caught) == 2


def test_a_route_refuses_a_plain_function_as_handler() -> None:
    from bridge.routing import route

    def plain(request: Request) -> PlainTextResponse:
        return PlainTextResponse("")

    with pytest.raises(TypeError, match="async function"):
        route("/fhir/{rtype}", plain, methods=["GET"])  # type: ignore[arg-type]


def _errors_app(cls: Any) -> Any:
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware

    from bridge.middleware import RequestIdMiddleware
    from bridge.routing import route

    async def conflict(request: Request) -> PlainTextResponse:
        raise KeyError("x")

    async def teapot(request: Request) -> PlainTextResponse:
        raise HTTPException(418, "short and stout")

    async def broken(request: Request) -> PlainTextResponse:
        raise ZeroDivisionError

    async def late(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise KeyError("after the answer began")

    async def late_broken(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ZeroDivisionError

    async def by_class(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse(f"class {type(exc).__name__}", status_code=409)

    def by_status(request: Request, exc: Exception) -> PlainTextResponse:  # a thread's
        return PlainTextResponse("status 418", status_code=418)

    async def server_error(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("server error", status_code=500)

    return cls(
        routes=[
            route("/conflict", conflict, methods=["GET"]),
            route("/teapot", teapot, methods=["GET"]),
            route("/broken", broken, methods=["GET"]),
            Mount("/late", app=late),
            Mount("/late-broken", app=late_broken),
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={KeyError: by_class, 418: by_status, Exception: server_error},
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/conflict"),
        ("HEAD", "/conflict"),
        ("GET", "/teapot"),
        ("GET", "/broken"),
        ("GET", "/late/x"),
        ("GET", "/late-broken/x"),
        ("GET", "/nowhere"),
        ("POST", "/conflict"),
    ],
)
def test_the_apps_exception_layer_answers_as_starlettes_does(method: str, path: str) -> None:
    from starlette.applications import Starlette

    from bridge.routing import App

    ours = _exchange(_errors_app(App), method, path)
    assert ours == _exchange(_errors_app(Starlette), method, path)
    assert ours[0] is not None  # every request got an answer


def test_the_apps_exception_layer_answers_each_case_as_expected() -> None:
    from bridge.routing import App

    app = _errors_app(App)
    assert _exchange(app, "GET", "/conflict") == (409, b"class KeyError", None)
    assert _exchange(app, "GET", "/teapot") == (418, b"status 418", None)
    assert _exchange(app, "GET", "/broken") == (500, b"server error", "ZeroDivisionError")
    # Begun, then a handled exception: the answer stands and the error is raised.
    assert _exchange(app, "GET", "/late/x") == (200, b"", "RuntimeError")
    # Begun, then an unhandled exception: no second answer, the error is raised.
    assert _exchange(app, "GET", "/late-broken/x") == (200, b"", "ZeroDivisionError")
    assert _exchange(app, "GET", "/nowhere")[0] == 404
    assert _exchange(app, "POST", "/conflict")[0] == 405


def test_inside_a_layer_that_notes_the_status_sends_pass_unwrapped() -> None:
    from starlette.middleware import Middleware

    from bridge.middleware import RequestIdMiddleware
    from bridge.middleware.status import STARTED
    from bridge.routing import App

    seen: dict[str, Any] = {}

    class Spy:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            seen["outside"] = send
            await self.app(scope, receive, send)

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        seen["inside"] = send
        seen["before"] = scope["state"].get(STARTED)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        seen["after"] = scope["state"].get(STARTED)
        await send({"type": "http.response.body", "body": b""})

    app = App(
        routes=[Mount("/raw", app=raw)],
        middleware=[Middleware(RequestIdMiddleware), Middleware(Spy)],
    )
    assert _exchange(app, "GET", "/raw/x")[0] == 204
    assert seen["inside"] is seen["outside"]
    assert (seen["before"], seen["after"]) == (None, True)

    # Alone, the layer notes the answer's start itself.
    alone = App(routes=[Mount("/late", app=_errors_app(App).routes[3].app)])
    assert alone.exception_handlers == {}
    alone.add_exception_handler(KeyError, _handled_409)
    assert _exchange(alone, "GET", "/late/x") == (200, b"", "RuntimeError")


async def _handled_409(request: Request, exc: Exception) -> PlainTextResponse:
    return PlainTextResponse("handled", status_code=409)


def test_the_server_error_layer_reads_the_mark_only_where_the_first_layer_makes_it() -> None:
    from starlette.middleware import Middleware

    from bridge.middleware import RequestIdMiddleware
    from bridge.routing import App, ServerErrors

    seen: list[Any] = []

    class Marking:
        marks_started = True

        def __init__(self, app: Any) -> None:
            self.app = RequestIdMiddleware(app)

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            seen.append(send)
            await self.app(scope, receive, send)

    class NotMarking(Marking):
        marks_started = False

    broken = _errors_app(App).routes[2]
    cases = [
        ([Middleware(Marking)], None, True),
        ([Middleware(RequestIdMiddleware)], None, True),
        ([Middleware(NotMarking)], None, False),
        ([Middleware(Marking)], 1024, False),  # the body limit layer sits between
        ([], None, False),
    ]
    for middleware, max_body_size, marked in cases:
        app = App(
            routes=[broken],
            middleware=middleware,
            exception_handlers={Exception: _server_error},
            max_body_size=max_body_size,
        )
        stack = app.build_middleware_stack()
        assert isinstance(stack, ServerErrors)
        assert stack.marked is marked
        # Either way the broken handler is answered once, with the app's 500.
        assert _exchange(app, "GET", "/broken") == (500, b"server error", "ZeroDivisionError")
    # Marked, the server's own `send` reaches the first layer; else Starlette's wrapper.
    assert seen[0].__qualname__ == "_exchange.<locals>.send"
    assert seen[1].__qualname__ == "ServerErrorMiddleware.__call__.<locals>._send"


async def _server_error(request: Request, exc: Exception) -> PlainTextResponse:
    return PlainTextResponse("server error", status_code=500)
