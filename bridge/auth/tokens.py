"""Bearer access tokens: JWTs checked against the issuer's keys (joserfc).

The signature algorithm must be one the settings allow (asymmetric only:
`none` and HMAC are never accepted), and `iss`, `aud`, `exp` and `nbf` are
checked with a small clock skew.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bridge.auth.scopes import ScopeError, Scopes, parse_scopes
from bridge.errors import Unauthorized

__all__ = ["Principal", "TokenVerifier"]

_ALLOWED = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384"}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the app, the user or patient, and what the token allows."""

    client_id: str
    subject: str
    patient: str | None
    scopes: Scopes
    token_id: str | None


class TokenVerifier:
    def __init__(
        self,
        keys: dict[str, Any],
        *,
        issuer: str,
        audience: str,
        algorithms: list[str],
        leeway: int,
    ) -> None:
        bad = sorted(set(algorithms) - _ALLOWED)
        if bad:
            raise ValueError(f"algorithms not allowed for access tokens: {', '.join(bad)}")
        self.keys = KeySet.import_key_set(keys)  # type: ignore[arg-type]
        self.algorithms = list(algorithms)
        self.leeway = leeway
        self.cache_size = 10_000
        self._cache: dict[str, tuple[Principal, float]] = {}
        self.claims = jwt.JWTClaimsRegistry(
            leeway=leeway,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
        )

    def verify(self, token: str) -> Principal:
        # A signature check costs ~100 µs; apps send the same token for many
        # requests. The cache is keyed by the whole token (a forged one cannot
        # hit it) and still honours the token's expiry on every use.
        cached = self._cache.get(token)
        if cached is not None:
            principal, expires = cached
            if time.time() <= expires + self.leeway:
                return principal
            del self._cache[token]
        principal, expires = self._verify(token)
        if len(self._cache) >= self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            decoded = jwt.decode(token, self.keys, algorithms=self.algorithms)
            self.claims.validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            # The reason stays generic: details help forgers, not clients.
            raise Unauthorized("The access token is invalid or expired.") from exc
        claims = decoded.claims
        try:
            scopes = parse_scopes(str(claims.get("scope", "")))
        except ScopeError as exc:
            raise Unauthorized("The access token carries a scope this server refuses.") from exc
        patient = claims.get("patient")
        principal = Principal(
            client_id=str(claims.get("client_id") or claims.get("azp") or "-"),
            subject=str(claims.get("sub", "-")),
            patient=str(patient) if patient else None,
            scopes=scopes,
            token_id=str(claims["jti"]) if claims.get("jti") else None,
        )
        return principal, float(claims["exp"])
