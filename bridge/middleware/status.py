"""The status a request was answered with, noted once for every layer that reports it.

The request id, the access log and the metrics each want the answer's status.
Each wrapping `send` for it would cost a coroutine call per message, on every
message of every answer. Instead the outermost of them wraps `send` once and
notes the status in the request's state (`STATUS`). The layers inside find the
note there when they are called, pass `send` on untouched, and read the status
once the app below them has returned: by then the answer's first message has
passed through the outer layer. A layer with no such layer outside it (alone
in a test, or first in another order) notes the status itself, the same way.
The same `send` marks that the answer has begun (`STARTED`), for the layers
that answer exceptions (bridge/routing.py: `HandledErrors` inside, and
`ServerErrors` outside when the request id layer is the first middleware).

A request the app raised on before answering keeps the 500 noted at the start:
the server's error handler outside answers it so.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Message, Scope, Send

__all__ = ["STARTED", "STATUS", "noting"]

STATUS = "response_status"
STARTED = "response_started"


def noting(scope: Scope, send: Send) -> tuple[dict[str, Any], Send]:
    """The request's state, and the `send` to pass on: `send` itself when a layer
    outside already notes the status in `state[STATUS]`, else one that does."""
    state: dict[str, Any] = scope.setdefault("state", {})
    if STATUS in state:
        return state, send
    state[STATUS] = 500

    async def note(message: Message) -> None:
        if message["type"] == "http.response.start":
            state[STATUS] = message["status"]
            state[STARTED] = True
        await send(message)

    return state, note
