"""Outbound calls to the authorization server, behind a one-method-per-verb seam.

Discovery documents, key sets and introspection answers are small JSON
documents fetched rarely (keys: on start, on rotation; introspection: once per
token per cache period), so each call opens its own aiohttp session: nothing
to close at shutdown, nothing shared between event loops.

Tests replace `Fetcher` with an object of the same two methods:

    class Canned:
        async def get_json(self, url: str) -> Any:
            return {"keys": [...]}

        async def post_form(self, url, form, auth) -> Any:
            return {"active": False}
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

__all__ = ["AiohttpFetcher", "FetchError", "Fetcher", "check_url"]

_MAX_BYTES = 1_048_576


class FetchError(Exception):
    """The authorization server could not be reached or answered nonsense.

    The message names the URL and the reason, never a token or a secret."""


class Fetcher(Protocol):
    async def get_json(self, url: str) -> Any: ...

    async def post_form(self, url: str, form: dict[str, str], auth: tuple[str, str]) -> Any: ...


def check_url(url: str) -> str | None:
    """Why `url` is no place to fetch keys or introspect from (None when it is fine).

    HTTPS always, except on loopback (a development or test issuer)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket in a discovery document
        return f"{url} is not a valid URL"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host:
        try:
            if host == "localhost" or ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass
        return f"{url} is plain HTTP; use https (plain HTTP only on loopback)"
    return f"{url} is not an http(s) URL"


class AiohttpFetcher:
    """JSON over HTTPS with certificate verification (optionally against `ca_file`)."""

    def __init__(self, *, ca_file: Path | None = None, timeout: float = 10) -> None:
        self._ssl = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._timeout = timeout

    async def get_json(self, url: str) -> Any:
        return await self._call("GET", url, None, None)

    async def post_form(self, url: str, form: dict[str, str], auth: tuple[str, str]) -> Any:
        return await self._call("POST", url, form, auth)

    async def _call(
        self, method: str, url: str, form: dict[str, str] | None, auth: tuple[str, str] | None
    ) -> Any:
        import aiohttp  # here: a gateway with static keys never fetches (~7 MB, ~60 ms)

        problem = check_url(url)
        if problem:
            raise FetchError(problem)
        try:
            connector = aiohttp.TCPConnector(ssl=self._ssl)
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.request(
                    method,
                    url,
                    data=form,
                    auth=aiohttp.BasicAuth(*auth) if auth else None,
                    headers={"Accept": "application/json"},
                    allow_redirects=False,
                ) as reply,
            ):
                body = await reply.content.read(_MAX_BYTES + 1)
                status = reply.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            # ValueError: a host name IDNA cannot encode (an empty or 64+ character label).
            raise FetchError(f"{method} {url}: {type(exc).__name__}") from exc
        if status != 200:
            raise FetchError(f"{method} {url}: HTTP {status}")
        if len(body) > _MAX_BYTES:
            raise FetchError(f"{method} {url}: the answer is larger than {_MAX_BYTES} bytes")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise FetchError(f"{method} {url}: the answer is not JSON") from exc
