"""A request id on every request and response (`X-Request-ID`).

The outermost of the layers that report an answer's status, so its `send`
also notes that status for the ones inside (`bridge/middleware/status.py`).
"""

from __future__ import annotations

import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.middleware.status import STARTED, STATUS

_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_POOL = bytearray()  # random bytes from the OS, taken a few at a time


def random_bytes(n: int) -> bytes:
    """`os.urandom(n)`, drawn from 4 KiB read at once: one system call per
    ~250 request ids instead of one each (getrandom costs ~10 µs on some VMs)."""
    if len(_POOL) < n:
        _POOL[:] = os.urandom(4096)
    taken = bytes(_POOL[-n:])
    del _POOL[-n:]
    return taken


# A forked child must not hand out the bytes its parent also holds.
os.register_at_fork(after_in_child=_POOL.clear)


class RequestIdMiddleware:
    # Its `send` marks the answer's start (`STARTED`) for every answer that passes
    # through it: first in the app's middleware, the server error layer reads it.
    marks_started = True

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        # A client's id is kept when it is safe to log; otherwise a fresh one.
        request_id = incoming if _SAFE.fullmatch(incoming) else random_bytes(8).hex()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state.setdefault(STATUS, 500)
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state[STATUS] = message["status"]
                state[STARTED] = True
                headers = [h for h in message.get("headers", ()) if h[0].lower() != header[0]]
                headers.append(header)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
