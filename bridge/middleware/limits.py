"""Size limits on URLs (414) and bodies (413), before anything parses them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.errors import FhirError, PayloadTooLarge
from bridge.settings import Limits


class UriTooLong(FhirError):
    status = 414
    code = "too-costly"
    default_diagnostics = "The request URL is too long; use POST [type]/_search instead."


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, *, limits: Limits, render: Callable[[FhirError], Any]) -> None:
        self.app = app
        self.limits = limits
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        url_bytes = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b""))
        if url_bytes > self.limits.max_url_bytes:
            await self.render(UriTooLong())(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (
                not value.isdigit() or int(value) > self.limits.max_body_bytes
            ):
                await self.render(PayloadTooLarge())(scope, receive, send)
                return
        limit = self.limits.max_body_bytes
        received = 0

        async def capped_receive() -> Message:
            # Chunked bodies have no Content-Length: count as they arrive.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge()
            return message

        await self.app(scope, capped_receive, send)
