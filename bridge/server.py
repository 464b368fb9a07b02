"""The HTTP protocol `bridge serve` runs: uvicorn's (httptools), with one write per answer.

uvicorn writes an answer's status line and headers as soon as the app sends
`http.response.start`, and its body with a second write when the app sends
`http.response.body`. Each write is a system call, and on a connection with
TCP_NODELAY (as uvicorn sets) each is a segment the client reads on its own.
Here a connection's transport holds a write back until the next one, and sends
both with one system call: the head of an answer goes out with its body. A write
that no other follows within the same turn of the event loop goes out at its end,
so nothing waits longer than that, and closing the connection sends what is held
first. Everything else about the protocol is uvicorn's.

    uvicorn.run(app, http=HttpProtocol, loop="uvloop")
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HttpProtocol"]

_COPY_LIMIT = 64 * 1024  # bytes: below it, joining two writes costs less than a writev


class _JoinedWrites:
    """A transport that holds a write back until the next one (or the end of the
    loop's turn) and sends them together; every other call goes to `transport`."""

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
                self._loop.call_soon(self._flush)
            return
        self._held = None
        if len(data) < _COPY_LIMIT:
            self._transport.write(held + data)
        else:  # a large body is not copied: both go out in one writev
            self._transport.writelines((held, data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a transport that joins an answer's writes."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_JoinedWrites(transport, self.loop))  # type: ignore[arg-type]
