"""A development token issuer for `bridge demo`: loopback only, never for real use.

It holds an in-memory EC key and mints SMART access tokens the gateway accepts
because the demo configures the gateway with this issuer's public key.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

__all__ = ["DevIssuer"]


class DevIssuer:
    def __init__(self, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self._key = ECKey.generate_key(
            "P-256", parameters={"kid": f"dev-{secrets.token_hex(4)}", "alg": "ES256", "use": "sig"}
        )

    def jwks(self) -> dict[str, Any]:
        return dict(KeySet([self._key]).as_dict(private=False))

    def mint(
        self,
        *,
        scope: str,
        client_id: str,
        patient: str | None = None,
        subject: str = "dev-user",
        lifetime: int = 8 * 3600,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_hex(8),
        }
        if patient:
            claims["patient"] = patient
        header = {"alg": "ES256", "kid": self._key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self._key)
