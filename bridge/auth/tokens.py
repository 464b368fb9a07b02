"""Bearer access tokens: JWTs checked against the issuer's keys (joserfc), and
opaque tokens checked by introspection (RFC 7662).

The signature algorithm must be one the settings allow (asymmetric only:
`none` and HMAC are never accepted), and `iss`, `aud`, `exp` and `nbf` are
checked with a small clock skew. A JWT whose `kid` the key set lacks makes the
key source refetch (rate-limited, see `bridge.auth.keys`).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bridge.auth.introspection import Introspector
from bridge.auth.keys import KeySource, StaticKeys, import_keys
from bridge.auth.scopes import ScopeError, Scopes, parse_scopes
from bridge.errors import Unauthorized

if TYPE_CHECKING:
    from bridge.auth.access import Access

__all__ = ["Principal", "TokenVerifier"]

_ALLOWED = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384"}
_INVALID = "The access token is invalid or expired."


@dataclass(frozen=True)
class Principal:
    """Who is calling: the app, the user or patient, and what the token allows."""

    client_id: str
    subject: str
    patient: str | None
    scopes: Scopes
    token_id: str | None
    fhir_user: str | None = None  # SMART `fhirUser`, e.g. Practitioner/DR1001
    issued_at: float | None = None  # `iat`: revocations cut off tokens issued before them
    # (type, interaction) -> what the token may do there, filled as requests ask.
    access_rules: dict[tuple[str, str], Access] = field(
        default_factory=dict, compare=False, repr=False
    )


def _jwt_header(token: str) -> dict[str, Any] | None:
    """The protected header when `token` has the shape of a compact JWS, else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = orjson.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return header if isinstance(header, dict) and "alg" in header else None


class TokenVerifier:
    """Turns a bearer token into a `Principal` or raises Unauthorized (401).

        verifier = TokenVerifier(jwks, issuer=ISS, audience=BASE, algorithms=["RS256"], leeway=60)
        principal = await verifier.verify(token)

    `keys` is a JWKS document or a `KeySource` (keys fetched from the issuer).
    With an `introspector`, a token that is not a JWT is introspected.
    """

    def __init__(
        self,
        keys: dict[str, Any] | KeySource,
        *,
        issuer: str,
        audience: str,
        algorithms: list[str],
        leeway: int,
        introspector: Introspector | None = None,
    ) -> None:
        bad = sorted(set(algorithms) - _ALLOWED)
        if bad:
            raise ValueError(f"algorithms not allowed for access tokens: {', '.join(bad)}")
        self.keys: KeySource = (
            keys if isinstance(keys, KeySource) else StaticKeys(import_keys(keys))
        )
        self.introspector = introspector
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

    async def verify(self, token: str) -> Principal:
        # A signature check costs ~100 µs; apps send the same token for many
        # requests. The cache holds verified JWTs only, keyed by the whole token
        # (a forged one cannot hit it), and still honours the token's expiry on
        # every use.
        cached = self._cache.get(token)
        if cached is not None:
            principal, expires = cached
            if time.time() <= expires + self.leeway:
                return principal
            del self._cache[token]
        header = _jwt_header(token)
        if header is None:
            if self.introspector is None:
                raise Unauthorized(_INVALID)
            return self._principal(await self.introspector.introspect(token))
        kid = header.get("kid")
        keys = await self.keys.get(kid if isinstance(kid, str) else None)
        principal, expires = self._verify(token, keys)
        if len(self._cache) >= self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[token] = (principal, expires)
        return principal

    def _verify(self, token: str, keys: KeySet) -> tuple[Principal, float]:
        try:
            decoded = jwt.decode(token, keys, algorithms=self.algorithms)
            self.claims.validate(decoded.claims)
        except (JoseError, ValueError, TypeError) as exc:
            # The reason stays generic: details help forgers, not clients.
            raise Unauthorized(_INVALID) from exc
        return self._principal(decoded.claims), float(decoded.claims["exp"])

    def _principal(self, claims: dict[str, Any]) -> Principal:
        scope = claims.get("scope", "")
        try:
            if not isinstance(scope, str):
                raise ScopeError("the scope claim is not a string")
            scopes = parse_scopes(scope)
        except ScopeError as exc:
            raise Unauthorized("The access token carries a scope this server refuses.") from exc
        patient = claims.get("patient")
        fhir_user = claims.get("fhirUser")
        return Principal(
            client_id=str(claims.get("client_id") or claims.get("azp") or "-"),
            subject=str(claims.get("sub", "-")),
            patient=str(patient) if patient else None,
            scopes=scopes,
            token_id=str(claims["jti"]) if claims.get("jti") else None,
            fhir_user=str(fhir_user) if fhir_user else None,
            issued_at=float(claims["iat"]) if isinstance(claims.get("iat"), int | float) else None,
        )
