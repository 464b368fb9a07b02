"""The token verifier the settings describe (auth.mode, issuer, keys)."""

from __future__ import annotations

import logging

import orjson

from bridge.auth.tokens import TokenVerifier
from bridge.errors import ConfigError, Problem
from bridge.settings import Settings

__all__ = ["create_verifier"]

log = logging.getLogger("bridge.auth")


def create_verifier(settings: Settings) -> TokenVerifier | None:
    auth = settings.auth
    if auth.mode == "off":
        log.warning("authentication is OFF: every request will be served without a token")
        return None
    keys = auth.jwks
    if keys is None and auth.jwks_file is not None:
        try:
            keys = orjson.loads(auth.jwks_file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(
                [Problem(str(auth.jwks_file), 1, 1, f"cannot read the JWKS: {exc}")]
            ) from exc
    audience = auth.audience or settings.base_url
    missing = [
        name
        for name, value in (("auth.issuer", auth.issuer), ("auth.jwks or auth.jwks_file", keys))
        if not value
    ]
    if not audience:
        missing.append("auth.audience (or base_url)")
    if missing:
        raise ConfigError(
            [
                Problem(
                    "settings",
                    1,
                    1,
                    f"auth.mode is 'jwt' but {', '.join(missing)} is not set; configure the "
                    "token issuer, or set auth.mode: off to serve without tokens",
                )
            ]
        )
    assert auth.issuer is not None and keys is not None and audience is not None
    try:
        return TokenVerifier(
            keys,
            issuer=auth.issuer,
            audience=audience,
            algorithms=auth.algorithms,
            leeway=auth.leeway,
        )
    except ValueError as exc:
        raise ConfigError([Problem("settings", 1, 1, f"auth: {exc}")]) from exc
