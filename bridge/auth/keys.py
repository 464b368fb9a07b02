"""The issuer's signing keys: given in the settings, or fetched and kept fresh.

`RemoteKeys` finds `jwks_uri` through OpenID Connect discovery
(`{issuer}/.well-known/openid-configuration`) unless a JWKS URL is configured,
and fetches the key set lazily, on the first token. A token whose `kid` is not
in the set triggers a refetch (the issuer rotated its keys), at most once per
`min_interval` seconds whatever the tokens say, so a flood of made-up kids
causes at most one fetch per interval. Concurrent requests share one fetch.

When no keys have ever arrived (the issuer is down at start), verification
answers 503 + Retry-After (`ServiceUnavailable`) rather than 401: the client's
token may be fine, and a 401 would send apps to log their users in again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bridge.auth.fetch import Fetcher, FetchError, check_url
from bridge.errors import ServiceUnavailable

__all__ = ["Discovery", "KeySource", "RemoteKeys", "StaticKeys", "import_keys"]

log = logging.getLogger("bridge.auth")


def import_keys(data: Any, *, skip_unreadable: bool = False) -> KeySet:
    """The public signing keys of a JWKS document (keys for encryption are left out).

    A key that cannot be read is a ValueError; with `skip_unreadable` (a key set
    fetched from the issuer) it is left out instead, so that one key of a kind
    this gateway does not know cannot lock every token out."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("a JWKS needs a 'keys' list")
    usable = [
        k
        for k in data["keys"]
        if isinstance(k, dict) and k.get("use", "sig") == "sig" and k.get("kty") in ("RSA", "EC")
    ]
    public = [
        {n: v for n, v in k.items() if n not in ("d", "p", "q", "dp", "dq", "qi")} for k in usable
    ]
    if not skip_unreadable:
        return _import(public)
    readable = []
    for i, key in enumerate(public):
        try:
            _import([key])
        except ValueError as exc:
            log.warning("the token issuer's JWKS: leaving out signing key %d: %s", i, exc)
            continue
        readable.append(key)
    return _import(readable)


def _import(keys: list[dict[str, Any]]) -> KeySet:
    if not keys:
        return KeySet([])
    try:
        return KeySet.import_key_set({"keys": keys})  # type: ignore[typeddict-item,unused-ignore]
    except (JoseError, ValueError, TypeError) as exc:
        raise ValueError(f"the JWKS holds a key that cannot be read: {exc}") from exc


def kids(keys: KeySet) -> set[str]:
    return {str(k.kid) for k in keys.keys if k.kid}


class KeySource:
    """Where a verifier gets the key set for a token with key id `kid`."""

    async def get(self, kid: str | None) -> KeySet:
        raise NotImplementedError


class StaticKeys(KeySource):
    def __init__(self, keys: KeySet) -> None:
        self.keys = keys

    async def get(self, kid: str | None) -> KeySet:
        return self.keys


class Discovery:
    """The issuer's OpenID Connect (or RFC 8414) metadata, fetched once it is needed."""

    def __init__(self, issuer: str, fetcher: Fetcher) -> None:
        self.issuer = issuer
        self.url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        self.fetcher = fetcher
        self._metadata: dict[str, Any] | None = None

    async def metadata(self) -> dict[str, Any]:
        """The metadata; FetchError when it cannot be had (the next call tries again)."""
        if self._metadata is None:
            data = await self.fetcher.get_json(self.url)
            if not isinstance(data, dict):
                raise FetchError(f"{self.url}: the discovery document is not a JSON object")
            if data.get("issuer") != self.issuer:
                # OpenID Connect Discovery 1.0, 4.3: a mismatch means another issuer.
                raise FetchError(f"{self.url}: its issuer is not {self.issuer}")
            self._metadata = data
        return self._metadata

    async def endpoint(self, name: str) -> str | None:
        value = (await self.metadata()).get(name)
        if value is None:
            return None
        problem = check_url(str(value))
        if problem:
            raise FetchError(f"{self.url}: {name}: {problem}")
        return str(value)


class RemoteKeys(KeySource):
    def __init__(
        self,
        fetcher: Fetcher,
        *,
        jwks_url: str | None = None,
        discovery: Discovery | None = None,
        min_interval: float = 30,
        max_age: float = 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if jwks_url is None and discovery is None:
            raise ValueError("RemoteKeys needs a JWKS URL or a discovery document")
        self.fetcher = fetcher
        self.jwks_url = jwks_url
        self.discovery = discovery
        self.min_interval = min_interval
        self.max_age = max_age
        self.clock = clock
        self.fetches = 0  # attempts, for metrics and tests
        self._keys: KeySet | None = None
        self._fetched_at = 0.0  # when the current keys arrived
        self._tried_at: float | None = None  # when the last attempt started
        self._lock = asyncio.Lock()

    def _fresh(self, kid: str | None) -> KeySet | None:
        keys = self._keys
        if keys is None or self.clock() - self._fetched_at >= self.max_age:
            return None
        if kid is not None and kid not in kids(keys):
            return None
        return keys

    def _may_try(self) -> bool:
        return self._tried_at is None or self.clock() - self._tried_at >= self.min_interval

    async def get(self, kid: str | None) -> KeySet:
        keys = self._fresh(kid)
        if keys is not None:
            return keys
        if self._may_try():
            async with self._lock:
                # Another request may have fetched while this one waited.
                keys = self._fresh(kid)
                if keys is not None:
                    return keys
                if self._may_try():
                    await self._refresh()
        if self._keys is None:
            raise ServiceUnavailable(
                "The gateway cannot reach the token issuer's keys yet; retry later.",
                retry_after=max(1, int(self.min_interval)),
            )
        # An unknown kid stays unknown: the verifier refuses the token (401).
        return self._keys

    async def _refresh(self) -> None:
        self._tried_at = self.clock()
        self.fetches += 1
        try:
            url = self.jwks_url
            if url is None:
                assert self.discovery is not None
                url = await self.discovery.endpoint("jwks_uri")
                if url is None:
                    raise FetchError(f"{self.discovery.url} names no jwks_uri")
            keys = import_keys(await self.fetcher.get_json(url), skip_unreadable=True)
        except (FetchError, ValueError) as exc:
            log.warning("cannot fetch the token issuer's keys: %s", exc)
            return
        if not keys.keys:
            log.warning("the token issuer's JWKS holds no signing key")
            return
        self._keys = keys
        self._fetched_at = self.clock()
        log.info("token issuer keys loaded: kids %s", ", ".join(sorted(kids(keys))) or "-")
