"""The default SOAP transport: HTTP/1.1 on the running event loop, parsed by httptools.

A SOAP call is one POST and one answer, so the transport is an asyncio
`Protocol` per connection with httptools' C parser (what uvicorn uses for
the requests coming in) and a keep-alive pool per origin: ~4x less CPU per
call than aiohttp's client (bench/README.md), which pays for cookie jars,
redirects, tracing and stream readers a SOAP call never uses.

    transport = HttpTransport(connect_timeout=5, max_connections=10)
    answer = await transport.send(SoapRequest(url, envelope, headers, operation, 10.0))

What it does: HTTP and HTTPS (certificates and host names always verified;
`ssl_context` adds a hospital's CA or a client certificate, see tls.py),
answers with Content-Length, chunked or read until the connection closes,
gzip or deflate answers (never asked for), cookies set by the answer (the
cookie session style), 1xx answers skipped. An answer larger than
`max_response_bytes` is refused as soon as its Content-Length or its bytes
say so, and the connection is dropped. No proxies: a legacy endpoint is
reached directly (as with the aiohttp client before it, which ignored the
environment's proxy settings).

How a call failed, for the retry rules of backend.py: `Unsent` when the
connection could not be made in time or no pooled connection came free
(nothing was sent); `ReadTimeout` when the whole answer did not come in time;
`ConnectionLost` when the connection broke or the answer was not HTTP.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
import zlib
from typing import Any
from urllib.parse import urlsplit

import httptools

from bridge import busypoll
from bridge.errors import BackendError
from bridge.soap.transport import (
    MAX_RESPONSE_BYTES,
    ConnectionLost,
    ReadTimeout,
    SoapRequest,
    SoapResponse,
    Unsent,
)

__all__ = ["HttpTransport"]

_KEEPALIVE = 30.0  # seconds an idle connection is kept (as aiohttp did)


class _TooLarge(BackendError):
    default_diagnostics = "The legacy system's answer is too large."


class _Connection(asyncio.Protocol):
    """One connection: at most one exchange at a time."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.loop = origin.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self.expires = 0.0
        self.waiter: asyncio.Future[SoapResponse] | None = None
        # One timer per connection, armed for `timer_at` (time.monotonic): an exchange
        # that ends leaves it armed, and the next moves it only to an earlier deadline;
        # when it fires it fails the exchange under way if that one's deadline has
        # passed, and otherwise waits on for it (or stops, with none under way). A
        # timer made and cancelled for every exchange cost ~0.45 µs each.
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers_done = False
        self.content_type = ""
        self.cookies: dict[str, str] | None = None
        self.length: int | None = None
        self.chunked = False
        self.encoding = b""
        self.body: list[bytes] = []
        self.size = 0
        self.refused: BackendError | None = None

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # nobody asked: a confused or hostile server
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            # httptools wraps what a callback raised: the cap comes through `refused`.
            self._fail(
                self.refused or ConnectionLost("The legacy system's answer was not valid HTTP.")
            )

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if (
                self.headers_done
                and self.length is None
                and not self.chunked
                and self.status >= 200
            ):
                self._complete()  # an answer delimited by the end of the connection
            else:
                self._fail(ConnectionLost())
        self._disarm()
        self.origin.closed(self)

    # -- httptools callbacks ---------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.content_type = value.decode("latin-1")
        elif name == b"content-length":
            try:
                self.length = int(value)
            except ValueError:
                self.length = -1  # the parser refuses it
            if self.length > self.origin.limit:
                self.refused = _TooLarge()
                raise self.refused
        elif name == b"transfer-encoding":
            self.chunked = b"chunked" in value.lower()
        elif name == b"content-encoding":
            self.encoding = value.strip().lower()
        elif name == b"set-cookie":
            cookie, _, _ = value.decode("latin-1").partition(";")
            key, eq, val = cookie.partition("=")
            if eq and key.strip():
                val = val.strip()
                if len(val) > 1 and val[0] == val[-1] == '"':
                    val = val[1:-1]
                if self.cookies is None:
                    self.cookies = {}
                self.cookies[key.strip()] = val

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.origin.limit:
            self.refused = _TooLarge()
            raise self.refused
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.status < 200:  # 100 Continue and friends: the answer follows
            self._reset()
            return
        self.reusable = self.parser.should_keep_alive()
        self._complete()

    # -- one exchange ----------------------------------------------------------

    def exchange(self, data: bytes, expires: float) -> asyncio.Future[SoapResponse]:
        """Send `data`; the answer, or ReadTimeout once `time.monotonic()` passes `expires`."""
        assert self.transport is not None
        self._reset()
        self.reusable = False
        waiter = self.waiter = self.loop.create_future()
        self.expires = expires
        if self.timer is None or expires < self.timer_at:
            self._arm(expires)
        self.transport.write(data)
        busypoll.kick(self.loop)  # the answer may come within the polling window
        return waiter

    def _arm(self, at: float) -> None:
        self._disarm()
        self.timer_at = at
        self.timer = self.loop.call_later(at - time.monotonic(), self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # no exchange under way: the next one arms a timer again
        if self.expires - time.monotonic() > 0:
            # A later exchange's deadline, or libuv's timers (counting from the
            # loop's cached clock) fired a little early: the deadlines of backend.py
            # (time.monotonic) must have passed.
            self._arm(self.expires)
            return
        self._fail(ReadTimeout())

    def _complete(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        body = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        self.body = []
        if self.encoding not in (b"", b"identity"):
            try:
                body = _decode(body, self.encoding, self.origin.limit)
            except BackendError as exc:
                self.reusable = False
                waiter.set_exception(exc)
                return
        waiter.set_result(SoapResponse(self.status, body, self.content_type, self.cookies or {}))

    def _fail(self, error: BaseException) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.reusable = False
        self._disarm()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()  # connection_lost follows and tells the origin


def _decode(body: bytes, encoding: bytes, limit: int) -> bytes:
    """A gzip or deflate answer, decompressed up to `limit` bytes."""
    if encoding in (b"gzip", b"x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
    else:
        raise BackendError("The legacy system answered in an encoding the gateway cannot read.")
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise BackendError("The legacy system's compressed answer is corrupt.") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _TooLarge()
    return out


class _Origin:
    """The keep-alive connections to one scheme, host and port."""

    def __init__(
        self,
        transport: HttpTransport,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.owner = transport
        self.loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.limit = transport.max_response_bytes
        self.idle: list[_Connection] = []  # most recently used last
        self.all: set[_Connection] = set()

    def take_idle(self) -> _Connection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.closed or self.loop.time() - conn.idle_since > _KEEPALIVE:
                conn.close()
                continue
            return conn
        return None

    async def connect(self, timeout: float) -> _Connection:
        conn = _Connection(self)
        try:
            async with asyncio.timeout(timeout):
                transport, _ = await self.loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None,
                )
        except (TimeoutError, OSError, ssl.CertificateError) as exc:
            conn.close()
            raise Unsent() from exc
        conn.transport = transport  # uvloop may call connection_made a little later
        self.all.add(conn)
        return conn

    def release(self, conn: _Connection) -> None:
        if conn.reusable and not conn.closed and not self.owner.closing:
            conn.idle_since = self.loop.time()
            conn.waiter = None
            self.idle.append(conn)
        else:
            conn.close()
        self.owner.wake()

    def closed(self, conn: _Connection) -> None:
        if conn in self.all:
            self.all.discard(conn)
            if conn in self.idle:
                self.idle.remove(conn)
            self.owner.opened -= 1
            self.owner.wake()


class HttpTransport:
    """SOAP over HTTP/1.1 with keep-alive connections; see the module docstring.

    `max_connections` bounds the connections open at once (all origins); a
    call that finds them all busy waits for one within its timeout.
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.max_connections = max(1, max_connections)
        self.max_response_bytes = max_response_bytes
        # HTTPS: the default context verifies certificates and host names.
        self._ssl = ssl_context
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._targets: dict[str, tuple[_Origin, bytes]] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.opened = 0
        self.closing = False

    def _target(self, url: str) -> tuple[_Origin, bytes]:
        """The origin and the request line with Host for `url` (kept per URL)."""
        found = self._targets.get(url)
        if found is not None and found[0].loop is asyncio.get_running_loop():
            return found
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise Unsent(f"The legacy endpoint is not an http(s) URL: {scheme or '-'}://...")
        default = 443 if scheme == "https" else 80
        try:
            port = parts.port or default
        except ValueError:
            raise Unsent("The legacy endpoint's port is not a number.") from None
        host = parts.hostname
        key = (scheme, host, port)
        origin = self._origins.get(key)
        if origin is None or origin.loop is not asyncio.get_running_loop():
            context = None
            if scheme == "https":
                context = self._ssl if self._ssl is not None else _default_context()
            origin = self._origins[key] = _Origin(self, host, port, context)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default else f"{shown}:{port}"
        try:
            line = f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\n".encode("ascii")
        except UnicodeEncodeError:
            raise Unsent("The legacy endpoint's URL must be ASCII (percent-encoded).") from None
        self._targets[url] = (origin, line)
        return origin, line

    async def send(self, request: SoapRequest) -> SoapResponse:
        if self.closing:
            raise Unsent("The gateway is shutting down.")
        origin, line = self._target(request.url)
        # One clock for the whole call, the one backend.py's deadlines use.
        expires = time.monotonic() + request.timeout
        conn = origin.take_idle()
        if conn is None:
            conn = await self._open(origin, request.timeout)
        head = [line]
        for name, value in request.headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                origin.release(conn)
                raise BackendError("A header for the legacy system holds a line break.")
            head.append(f"{name}: {value}\r\n".encode())
        head.append(b"Content-Length: %d\r\n\r\n" % len(request.body))
        head.append(request.body)
        try:
            if expires <= time.monotonic():
                raise ReadTimeout()
            response = await conn.exchange(b"".join(head), expires)
        except BaseException:
            conn.close()
            origin.release(conn)
            raise
        origin.release(conn)
        return response

    async def _open(self, origin: _Origin, timeout: float) -> _Connection:
        """A new connection, once fewer than `max_connections` are open."""
        loop = origin.loop
        deadline = loop.time() + timeout
        while self.opened >= self.max_connections:
            conn = origin.take_idle()
            if conn is not None:
                return conn
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                raise Unsent("Every connection to the legacy system stayed busy.") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        conn = origin.take_idle()
        if conn is not None:
            return conn
        self.opened += 1
        try:
            return await origin.connect(min(self.connect_timeout, max(0.0, deadline - loop.time())))
        except BaseException:
            self.opened -= 1
            self.wake()
            raise

    def wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        self.closing = True
        for origin in self._origins.values():
            for conn in list(origin.all):
                conn.close()
        self._origins.clear()
        self._targets.clear()
        await asyncio.sleep(0)  # let connection_lost run


_DEFAULT: dict[str, Any] = {}


def _default_context() -> ssl.SSLContext:
    context = _DEFAULT.get("context")
    if context is None:
        context = _DEFAULT["context"] = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    assert isinstance(context, ssl.SSLContext)
    return context
