"""Opaque access tokens: OAuth 2.0 Token Introspection (RFC 7662).

A token that is not a JWT is POSTed to the introspection endpoint (the one
configured, or the one the issuer's discovery document names) with the
gateway's own client credentials. The answer is reused for `cache_ttl`
seconds, never past the token's `exp`: a token revoked at the authorization
server is refused by the gateway at most that long afterwards. Tokens are kept
in memory only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from bridge.auth.fetch import Fetcher, FetchError
from bridge.auth.keys import Discovery
from bridge.errors import ServiceUnavailable, Unauthorized

__all__ = ["Introspector"]

log = logging.getLogger("bridge.auth")
_INACTIVE = "The access token is invalid or expired."


class Introspector:
    def __init__(
        self,
        fetcher: Fetcher,
        *,
        client_id: str,
        client_secret: str,
        issuer: str,
        audience: str,
        endpoint: str | None = None,
        discovery: Discovery | None = None,
        cache_ttl: float = 30,
        leeway: int = 0,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        if endpoint is None and discovery is None:
            raise ValueError("introspection needs an endpoint or a discovery document")
        self.fetcher = fetcher
        self._auth = (client_id, client_secret)
        self.issuer = issuer
        self.audience = audience
        self.endpoint = endpoint
        self.discovery = discovery
        self.cache_ttl = cache_ttl
        self.leeway = leeway
        self.clock = clock
        self.cache_size = cache_size
        self.calls = 0  # introspection requests sent, for tests and metrics
        self._cache: dict[bytes, tuple[dict[str, Any] | None, float]] = {}

    async def introspect(self, token: str) -> dict[str, Any]:
        """The claims of an active token for this server; Unauthorized otherwise."""
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None:
            claims, until = cached
            if now < until:
                if claims is None:
                    raise Unauthorized(_INACTIVE)
                return claims
            del self._cache[key]
        claims = self._accept(await self._ask(token), now)
        until = now + self.cache_ttl
        if claims is not None and claims.get("exp") is not None:
            until = min(until, float(claims["exp"]) + self.leeway)
        if self.cache_ttl > 0:
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (claims, until)
        if claims is None:
            raise Unauthorized(_INACTIVE)
        return claims

    async def _ask(self, token: str) -> Any:
        try:
            endpoint = self.endpoint
            if endpoint is None:
                assert self.discovery is not None
                endpoint = await self.discovery.endpoint("introspection_endpoint")
                if endpoint is None:
                    raise FetchError(f"{self.discovery.url} names no introspection_endpoint")
            self.calls += 1
            return await self.fetcher.post_form(
                endpoint, {"token": token, "token_type_hint": "access_token"}, self._auth
            )
        except FetchError as exc:
            log.warning("token introspection failed: %s", exc)
            raise ServiceUnavailable(
                "The gateway cannot check the access token with its issuer now; retry later."
            ) from None

    def _accept(self, answer: Any, now: float) -> dict[str, Any] | None:
        """The answer's claims when it describes an active access token for this server."""
        if not isinstance(answer, dict) or answer.get("active") is not True:
            return None
        token_type = answer.get("token_type")
        if token_type is not None and str(token_type).lower() != "bearer":
            return None  # a refresh token, or a sender-constrained one this server cannot check
        if "cnf" in answer:
            return None
        # Times, when given, must be numbers a float holds (a NumericDate): a garbage
        # answer is refused, never a 500 and never a token without an end.
        times = {name: answer.get(name) for name in ("exp", "nbf", "iat")}
        if not all(v is None or _numeric(v) for v in times.values()):
            return None
        exp, nbf, iat = times["exp"], times["nbf"], times["iat"]
        if exp is not None and now > exp + self.leeway:
            return None
        if nbf is not None and now + self.leeway < nbf:
            return None
        if iat is not None and iat > now + self.leeway:
            # As for a JWT: issued in the future, it would pass every revocation.
            return None
        iss = answer.get("iss")
        if iss is not None and iss != self.issuer:
            return None
        aud = answer.get("aud")
        if aud is not None:
            audiences = aud if isinstance(aud, list) else [aud]
            if self.audience not in audiences:
                return None
        return answer


def _numeric(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False
