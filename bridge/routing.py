"""Starlette's router, trying a request only on the routes its path can match,
and routes whose handlers Starlette calls with one exception wrapper, not two;
that wrapper (`HandledErrors`) does not wrap `send` either, nor does the
outermost layer (`ServerErrors`) when the first middleware marks the answer's
start.

Starlette tries every route in order, one regular expression each; a FHIR read
is the gateway's ~20th route. `IndexedRouter` makes the same choice (the first
route that fully matches, in order) among the routes whose literal leading
segments and segment count fit the path, found once per path shape; anything
else (405 for a known path, redirects, 404, lifespan) is Starlette's own code.
A matched route of an allowed method is called without `Route.handle`, and the
app calls the router's stack without `Router.__call__`: two coroutine frames
fewer on every request, each of them resumed at every wait of the request. A
plain route whose parameters are strings (every route of the gateway) is
matched on the path found once, as `Route.matches` would match it, without
converting each parameter to itself.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

from starlette._utils import get_route_path, is_async_callable
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import StringConvertor
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send

from bridge.errors import ConfigError
from bridge.middleware.status import STARTED, noting

__all__ = [
    "App",
    "Endpoint",
    "HandledErrors",
    "IndexedRouter",
    "ServerErrors",
    "route",
    "same_without_slash",
]

_Shape = tuple[int, str, str]
_MAX_SHAPES = 4096  # paths of unknown shapes past this are not remembered


def _shape(path: str) -> _Shape:
    parts = path.split("/", 3)
    n = path.count("/") + 1
    return (n, parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")


def _may_match(route: BaseRoute, shape: _Shape) -> bool:
    """False only when `route` cannot match a path of this shape."""
    if type(route) is not Route or ":path}" in route.path:
        return True  # mounts, hosts, paths of any depth: always tried
    template = route.path.split("/")
    if len(template) != shape[0]:
        return False
    return all("{" in template[i] or template[i] == shape[i] for i in (1, 2) if i < len(template))


def _plain(route: BaseRoute) -> Route | None:
    """`route` when it is a plain `Route` whose parameters are all strings (their
    conversion is the text as matched), else None."""
    if type(route) is not Route:
        return None
    if not all(type(c) is StringConvertor for c in route.param_convertors.values()):
        return None
    return route


_Candidate = tuple[BaseRoute, Route | None]


class IndexedRouter(Router):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shapes: dict[_Shape, tuple[_Candidate, ...]] = {}
        self._indexed = len(self.routes)

    def _candidates(self, shape: _Shape) -> tuple[_Candidate, ...]:
        if len(self.routes) != self._indexed:  # routes added since: index again
            self._shapes.clear()
            self._indexed = len(self.routes)
        found = self._shapes.get(shape)
        if found is None:
            found = tuple((r, _plain(r)) for r in self.routes if _may_match(r, shape))
            if len(self._shapes) < _MAX_SHAPES:
                self._shapes[shape] = found
        return found

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Starlette's lifespan; a start-up refused for a setting (`ConfigError`) is
        reported as its problems alone, as `bridge` reports them, not as a traceback."""

        async def send_plainly(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                exc = sys.exc_info()[1]  # sent from the handler of what failed
                if isinstance(exc, ConfigError):
                    message = {**message, "message": str(exc)}
            await send(message)

        await super().lifespan(scope, receive, send_plainly)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = get_route_path(scope)
            for route, plain in self._candidates(_shape(path)):
                if plain is not None:
                    # `Route.matches` for a route whose parameters are strings, on the
                    # path found once: a full match is a match of an allowed method.
                    found = plain.path_regex.match(path)
                    if found is None or (plain.methods and scope["method"] not in plain.methods):
                        continue
                    params = found.groupdict()
                    outer = scope.get("path_params")
                    scope.setdefault("router", self)
                    scope["route"] = plain
                    scope["endpoint"] = plain.endpoint
                    scope["path_params"] = {**outer, **params} if outer else params
                    await plain.app(scope, receive, send)
                    return
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = route
                    scope.update(child_scope)
                    if type(route) is Route:
                        # A full match is of an allowed method, for which `Route.handle`
                        # only calls the route's app: called here, without its frame.
                        await route.app(scope, receive, send)
                    else:
                        await route.handle(scope, receive, send)
                    return
        # No route fully matches (405, a redirect, 404), or not HTTP: as Starlette does.
        await super().app(scope, receive, send)


def same_without_slash(router: Router) -> ASGIApp:
    """A router's `default` (what answers a path no route takes) that serves a path with a
    trailing slash as the same path without it: `[base]/Patient/` is `[base]/Patient`.

    Starlette would redirect instead (`redirect_slashes`), to a URL made from the
    request's Host header, with an empty body that a client which does not follow
    redirects (httpx, by default) is left with. Only paths no route takes come here:
    nothing is added to a request that matches.

        router = IndexedRouter(routes=routes, redirect_slashes=False)
        router.default = same_without_slash(router)
    """

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # One slash, written as a slash: not `//`, not an encoded `%2F`.
            path: str = scope["path"]
            raw = scope.get("raw_path") or path.encode()
            trimmed = path[:-1]
            if (
                raw.endswith(b"/")
                and not raw.endswith(b"//")
                and len(trimmed) > len(scope.get("root_path", ""))
            ):
                scope["path"] = trimmed
                scope["raw_path"] = raw[:-1]
                await router.app(scope, receive, send)
                return
        await router.not_found(scope, receive, send)

    return default


class Endpoint:
    """A handler `func(request) -> response` as an ASGI app.

    Starlette's `Route` wraps a function in `request_response`, which catches the
    handler's exceptions with the app's handlers, and `ExceptionMiddleware` (here
    `HandledErrors`), just outside the router, does the same again for everything
    inside it. Called through this class, a handler's exceptions reach that
    middleware directly, which answers them with the same handlers; a request
    saves a coroutine frame, two closures and a wrapper around each message sent.
    """

    __slots__ = ("func",)

    def __init__(self, func: Callable[[Request], Awaitable[Response]]) -> None:
        self.func = func

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.func(Request(scope, receive, send))
        await response(scope, receive, send)


def route(path: str, func: Callable[[Request], Awaitable[Response]], methods: list[str]) -> Route:
    """`Route(path, func, methods=methods)`, the handler called through `Endpoint`.

    Only for `async def` handlers: Starlette would run a plain function in a
    thread, `Endpoint` cannot."""
    if not is_async_callable(func):
        raise TypeError(f"route {path}: the handler must be an async function")
    return Route(path, Endpoint(func), methods=methods, name=getattr(func, "__name__", None))


class HandledErrors(ExceptionMiddleware):
    """Starlette's `ExceptionMiddleware` (the app's exception handlers, just outside
    the router) without a wrapper around `send`.

    Starlette's wraps every message sent to learn whether the answer has begun, and
    makes a `Request` for every request. Here the layer outside that notes the
    status marks it in the request's state (`STARTED`, bridge/middleware/status.py;
    alone, this layer notes it itself), and a `Request` is made only for a
    handler. Answers are the same: a handled exception raised after the answer
    began is a RuntimeError, as in Starlette."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        state, send = noting(scope, send)
        scope["starlette.exception_handlers"] = (self._exception_handlers, self._status_handlers)
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            handler = None
            if isinstance(exc, HTTPException):
                handler = self._status_handlers.get(exc.status_code)
            if handler is None:
                handler = next(
                    (
                        self._exception_handlers[c]
                        for c in type(exc).__mro__
                        if c in self._exception_handlers
                    ),
                    None,
                )
            if handler is None:
                raise
            if state.get(STARTED):
                raise RuntimeError(
                    "Caught handled exception, but response already started."
                ) from exc
            request = Request(scope, receive, send)
            if is_async_callable(handler):
                response = await handler(request, exc)  # type: ignore[arg-type]
            else:
                response = await run_in_threadpool(handler, request, exc)
            if response is not None:
                await response(scope, receive, send)
            exc.__traceback__ = None  # a reused exception would gather tracebacks


class ServerErrors(ServerErrorMiddleware):
    """Starlette's `ServerErrorMiddleware` (a 500 for an exception no handler took,
    then the exception raised again for the server to log), without a wrapper
    around `send` when `marked`: the middleware just inside it marks the answer's
    start in the request's state (`STARTED`; a class with `marks_started`, the
    request id layer), where this layer reads it."""

    def __init__(
        self,
        app: ASGIApp,
        handler: ExceptionHandler | None = None,
        debug: bool = False,
        *,
        marked: bool = False,
    ) -> None:
        super().__init__(app, handler=handler, debug=debug)
        self.marked = marked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.marked or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            request = Request(scope)
            if self.debug:
                response = await run_in_threadpool(self.debug_response, request, exc)
            elif self.handler is None:
                response = self.error_response(request, exc)
            elif is_async_callable(self.handler):
                response = await self.handler(request, exc)  # type: ignore[assignment, arg-type]
            else:
                response = await run_in_threadpool(self.handler, request, exc)  # type: ignore[arg-type]
            if not state.get(STARTED):
                await response(scope, receive, send)
            raise exc


class App(Starlette):
    """Starlette, with `HandledErrors` in place of its `ExceptionMiddleware`, and
    `ServerErrors` in place of its `ServerErrorMiddleware`."""

    def build_middleware_stack(self) -> ASGIApp:
        server_error = None
        handlers: dict[Any, Any] = {}
        for key, value in self.exception_handlers.items():
            if key in (500, Exception):
                server_error = value  # ServerErrorMiddleware's, outermost
            else:
                handlers[key] = value
        # The router's own stack, not the router: `Router.__call__` only calls it.
        inner = self.router.middleware_stack if type(self.router) is IndexedRouter else self.router
        app: ASGIApp = HandledErrors(inner, handlers=handlers, debug=self.debug)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        if self.max_body_size is not None:
            app = RequestBodyLimitMiddleware(app, max_body_size=self.max_body_size)
        # Every answer passes through the first middleware's `send` (when nothing
        # sits between it and this layer): where that marks the start, so is read.
        first = self.user_middleware[0].cls if self.user_middleware else None
        marked = self.max_body_size is None and getattr(first, "marks_started", False) is True
        return ServerErrors(app, handler=server_error, debug=self.debug, marked=marked)
