"""The one seam every outbound SOAP call goes through.

A transport has one method, `send`. The production transport is
`bridge.soap.http.HttpTransport` (HTTP/1.1 with httptools on the event loop,
keep-alive connections per origin: ~20 µs of CPU per call where aiohttp took
~100-130 µs); `AiohttpTransport` here is kept as a fallback. Tests can pass
any object with the same method.

    class Canned:
        async def send(self, request: SoapRequest) -> SoapResponse:
            return SoapResponse(200, RECORDED_REPLY)

A transport says how a call failed, because it decides whether the call may
be tried again: `Unsent` (nothing reached the legacy system: connection
refused or not made in time), `ReadTimeout` (the request went out, the answer
did not come in time) or `ConnectionLost` (the connection broke during the
exchange). After the last two a write may or may not have happened. A plain
`BackendTimeout` or `BackendUnavailable` from a transport is read as
`ReadTimeout` or `ConnectionLost`: when in doubt, the request was sent.

    BackendUnavailable (503)
    ├── Unsent              nothing was sent: safe to try again
    ├── ConnectionLost      the request may have been sent
    └── Refused             an HTTP error page instead of SOAP (e.g. a proxy's 503)
    BackendTimeout (504)
    └── ReadTimeout         the request was sent; no answer in time
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from bridge.errors import BackendError, BackendTimeout, BackendUnavailable

if TYPE_CHECKING:
    import aiohttp  # imported when an AiohttpTransport is first used (~7 MB, ~60 ms)

__all__ = [
    "AiohttpTransport",
    "ConnectionLost",
    "ReadTimeout",
    "Refused",
    "SoapRequest",
    "SoapResponse",
    "Transport",
    "Unsent",
]

MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class Unsent(BackendUnavailable):
    """Nothing reached the legacy system (connection refused, or not made in time)."""

    default_diagnostics = "The legacy system could not be reached; retry later."


class ConnectionLost(BackendUnavailable):
    """The connection broke after the request may have been sent."""

    default_diagnostics = "The connection to the legacy system broke; retry later."


class Refused(BackendUnavailable):
    """The legacy endpoint answered an HTTP error page instead of SOAP."""


class ReadTimeout(BackendTimeout):
    """The request was sent and no whole answer came in time."""


@dataclass(frozen=True)
class SoapRequest:
    url: str
    body: bytes
    headers: dict[str, str]
    operation: str
    timeout: float


@dataclass(frozen=True)
class SoapResponse:
    status: int
    body: bytes
    content_type: str = "text/xml"
    cookies: dict[str, str] = field(default_factory=dict)


class Transport(Protocol):
    async def send(self, request: SoapRequest) -> SoapResponse:
        """Send one SOAP request; raise Unsent, ReadTimeout or ConnectionLost."""
        ...

    async def close(self) -> None: ...


class AiohttpTransport:
    def __init__(
        self,
        *,
        connect_timeout: float,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        # HTTPS: certificates are always verified; a context adds own CAs or a client cert.
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily so it binds to the running event loop.
        import aiohttp

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=30,
                ttl_dns_cache=300,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(self, request: SoapRequest) -> SoapResponse:
        import aiohttp

        # The connect limit is the smaller one, so a slow connect surfaces as
        # a connect timeout (nothing sent) rather than as the total timeout.
        timeout = aiohttp.ClientTimeout(
            total=request.timeout, sock_connect=min(self._connect_timeout, request.timeout)
        )
        try:
            async with self._client().post(
                request.url, data=request.body, headers=request.headers, timeout=timeout
            ) as resp:
                length = resp.content_length
                if length is not None and length > MAX_RESPONSE_BYTES:
                    raise BackendError("The legacy system's answer is too large.")
                body = await resp.content.read(MAX_RESPONSE_BYTES + 1)
                if len(body) > MAX_RESPONSE_BYTES:
                    raise BackendError("The legacy system's answer is too large.")
                cookies = {name: morsel.value for name, morsel in resp.cookies.items()}
                return SoapResponse(
                    resp.status, body, resp.headers.get("Content-Type", ""), cookies
                )
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
            raise Unsent() from exc
        except TimeoutError as exc:
            raise ReadTimeout() from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            raise ConnectionLost() from exc
        except aiohttp.ClientError as exc:
            raise BackendError() from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
