"""The HTTP protocol `bridge serve` runs: uvicorn's (httptools), with one write per answer.

uvicorn writes an answer's status line and headers as soon as the app sends
`http.response.start`, and its body with a second write when the app sends
`http.response.body`. Each write is a system call, and on a connection with
TCP_NODELAY (as uvicorn sets) each is a segment the client reads on its own.

Here an answer's head waits for the app's next message, and goes out with the
first part of the body in one system call. Everything else is written as the app
sends it: once the app's `send` of a body message returns, nothing of the answer
is held back. A head the app does not follow at once (it awaits something first)
goes out at the end of the loop's turn; closing the connection, and the client's
end of stream, send what is held first.

Two of uvicorn's answers are the gateway's own: a request that is not HTTP
(uvicorn's plain-text 400) is answered with an OperationOutcome, and a WebSocket
upgrade is an ordinary request (the gateway serves no WebSockets; uvicorn's would
log the URL, and with it a patient id). Everything else about the protocol is
uvicorn's.

    uvicorn.run(app, http=HttpProtocol, loop="uvloop")
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bridge import busypoll
from bridge.fhir.outcome import operation_outcome
from bridge.fhir.response import MEDIA_TYPE

__all__ = ["HttpProtocol", "client_address_options"]

_COPY_LIMIT = 64 * 1024  # bytes: below it, joining two writes costs less than a writev

# The answer to bytes that are not an HTTP request. A fixed sentence: nothing of
# the request (its URL may hold a patient id) is echoed back or logged.
_NOT_HTTP = orjson.dumps(
    operation_outcome("structure", "The request is not well-formed HTTP/1.1; it was not processed.")
)
_NOT_HTTP_HEAD = b"HTTP/1.1 400 Bad Request\r\n"
_NOT_HTTP_TAIL = b"content-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (
    MEDIA_TYPE.encode("ascii"),
    len(_NOT_HTTP),
    _NOT_HTTP,
)


class _JoinedWrites:
    """A transport that holds a write back until the next one (or `flush`, or the
    end of the loop's turn) and sends both together; every other call goes to
    `transport`."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            if data:
                self._held = bytes(data)
                self._loop.call_soon(self.flush)
            return
        self._held = None
        if len(data) < _COPY_LIMIT:
            self._transport.write(held + data)
        else:  # a large body is not copied: both go out in one writev
            self._transport.writelines((held, data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def flush(self) -> None:
        """Send what is held now (unless the connection is gone)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def write_eof(self) -> None:
        try:
            self.flush()
        finally:
            self._transport.write_eof()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing an answer's head with its body.

    uvicorn writes every body message the app sends (an empty one too), which
    sends the held head with it; a HEAD answer has no body to write, and goes
    out as it completes (`on_response_complete`). No wrapper around the app's
    `send` is needed for either. A connection keeps one keep-alive timer while it
    is in use, not one per answer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # No WebSockets, whatever the config says (`bridge serve` also sets ws="none"):
        # an upgrade request is then answered as the plain request it also is.
        self.ws_protocol_class = None
        self._joined: _JoinedWrites | None = None
        self._idle_since: float | None = None  # loop time the last answer completed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._joined = _JoinedWrites(transport, self.loop)
        super().connection_made(self._joined)  # type: ignore[arg-type]

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to a request httptools cannot parse (a control byte in a
        # header, an unknown method, raw non-ASCII in the URL, a bad Content-Length,
        # ...), as an OperationOutcome. uvicorn logs its own fixed `msg`, no request bytes.
        head = [_NOT_HTTP_HEAD]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(_NOT_HTTP_TAIL)
        self.transport.write(b"".join(head))
        self.transport.close()

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn calls this once an upgrade request (WebSocket, h2c) is parsed, with
        # no protocol to upgrade to: its answer is an ordinary one (RFC 9110 lets a
        # server ignore Upgrade). uvicorn's warnings would send operators to install
        # a WebSocket library. It drops what the client sent after the request, so
        # the connection closes once the answer is out.
        if self.cycle is not None:
            self.cycle.keep_alive = False

    def eof_received(self) -> None:
        # Once this returns, the transport closes itself (not through _JoinedWrites).
        if self._joined is not None:
            self._joined.flush()
        super().eof_received()

    def on_response_complete(self) -> None:
        # uvicorn's, but with one keep-alive timer per connection: uvicorn makes one
        # for every answer and cancels it when the next request's data comes
        # (`call_later` and `cancel`, ~0.4 µs). Here the timer is made when the
        # connection first goes idle, and when it fires while the connection has
        # been busy meanwhile, it waits out the idle time left (`_keep_alive_due`).
        if self._joined is not None:
            self._joined.flush()
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        busypoll.kick(self.loop)  # the client's next request may come within the window
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._keep_alive_due
            )

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn calls this when data comes: the connection is busy, not idle.
        self._idle_since = None

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        since = self._idle_since
        if since is None:
            return  # busy: its next answer makes the timer again
        left = since + self.timeout_keep_alive - self.loop.time()
        if left >= 0.001:  # uvloop's timers count whole milliseconds
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
            return
        self.timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None


def client_address_options(trusted_proxies: list[str]) -> dict[str, Any]:
    """uvicorn's options for the client address a request reports (`scope["client"]`,
    which the audit trail and the rate limits use): the peer's, or with trusted proxies
    listed, what their `X-Forwarded-For` says (and `X-Forwarded-Proto` the scheme).
    Without proxies no layer reads those headers: a client cannot claim another
    address."""
    if not trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(trusted_proxies)}
