"""Bearer access tokens: JWTs checked against the issuer's keys (joserfc), and
opaque tokens checked by introspection (RFC 7662).

The signature algorithm must be one the settings allow (asymmetric only:
`none` and HMAC are never accepted), and `iss`, `aud`, `exp` and `nbf` are
checked with a small clock skew. A JWT whose `kid` the key set lacks makes the
key source refetch (rate-limited, see `bridge.auth.keys`).
"""

from __future__ import annotations

import base64
import math
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
from bridge.fhir.ids import is_fhir_id

if TYPE_CHECKING:
    from bridge.auth.access import Access

__all__ = ["Principal", "TokenVerifier"]

_ALLOWED = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384"}
_INVALID = "The access token is invalid or expired."
_ODD_CLAIM = "The access token carries a claim of the wrong type."


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
        except (JoseError, ValueError, TypeError, RecursionError) as exc:
            # The reason stays generic: details help forgers, not clients. A payload
            # nested past the interpreter's recursion limit is only refused, too.
            raise Unauthorized(_INVALID) from exc
        return self._principal(decoded.claims), _numeric_date(decoded.claims["exp"])

    def _principal(self, claims: dict[str, Any]) -> Principal:
        scope = claims.get("scope", "")
        try:
            if not isinstance(scope, str):
                raise ScopeError("the scope claim is not a string")
            scopes = parse_scopes(scope)
        except ScopeError as exc:
            raise Unauthorized("The access token carries a scope this server refuses.") from exc
        patient = _text(claims.get("patient"))
        if patient is not None and not is_fhir_id(patient):
            raise Unauthorized("The access token's patient claim is not a FHIR resource id.")
        iat = claims.get("iat")
        return Principal(
            client_id=_text(claims.get("client_id")) or _text(claims.get("azp")) or "-",
            subject=_text(claims.get("sub")) or "-",
            patient=patient,
            scopes=scopes,
            token_id=_text(claims.get("jti")),
            fhir_user=_text(claims.get("fhirUser")),
            issued_at=None if iat is None else _numeric_date(iat),
        )


def _text(value: Any) -> str | None:
    """A claim naming someone or something: a string (or a number, as some issuers
    send ids), None when absent or empty. Anything else (a list, an object, a
    boolean) is refused rather than turned into text that matches nobody's
    revocation or Consent."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise Unauthorized(_ODD_CLAIM)


def _numeric_date(value: Any) -> float:
    """A NumericDate claim (exp, iat) as a float; 401 for anything else, an integer
    too large for a float included."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            pass
        else:
            if math.isfinite(seconds):
                return seconds
    raise Unauthorized(_ODD_CLAIM)
