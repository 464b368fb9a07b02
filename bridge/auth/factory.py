"""The token verifier the settings describe (auth.mode, issuer, keys, introspection).

Keys, strongest first: `auth.jwks` (inline), `auth.jwks_file`, `auth.jwks_url`,
then the `jwks_uri` of `{issuer}/.well-known/openid-configuration`. Opaque
tokens are introspected when `auth.introspection_client_id` is set, at
`auth.introspection_endpoint` or the endpoint discovery names.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from bridge.auth.fetch import AiohttpFetcher, Fetcher, check_url
from bridge.auth.introspection import Introspector
from bridge.auth.keys import Discovery, KeySource, RemoteKeys
from bridge.auth.tokens import TokenVerifier
from bridge.errors import ConfigError, Problem
from bridge.settings import Settings

__all__ = ["create_verifier"]

log = logging.getLogger("bridge.auth")


def _problem(message: str) -> ConfigError:
    return ConfigError([Problem("settings", 1, 1, message)])


def create_verifier(settings: Settings, fetcher: Fetcher | None = None) -> TokenVerifier | None:
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
    missing = [] if auth.issuer else ["auth.issuer"]
    if not audience:
        missing.append("auth.audience (or base_url)")
    if missing:
        raise _problem(
            f"auth.mode is 'jwt' but {', '.join(missing)} is not set; configure the "
            "token issuer, or set auth.mode: off to serve without tokens"
        )
    assert auth.issuer is not None and audience is not None
    for name, url in (
        ("auth.jwks_url", auth.jwks_url),
        ("auth.introspection_endpoint", auth.introspection_endpoint),
        ("auth.issuer", auth.issuer if keys is None and auth.jwks_url is None else None),
    ):
        problem = check_url(url) if url else None
        if problem:
            raise _problem(f"{name}: {problem}")
    if auth.introspection_client_id and auth.introspection_client_secret is None:
        raise _problem(
            "auth.introspection_client_id is set but auth.introspection_client_secret is not "
            "(better: BRIDGE_AUTH__INTROSPECTION_CLIENT_SECRET)"
        )
    if fetcher is None:
        fetcher = AiohttpFetcher(ca_file=auth.ca_file, timeout=auth.http_timeout)
    discovery = Discovery(auth.issuer, fetcher)
    source: dict[str, Any] | KeySource
    if keys is not None:
        source = keys
    else:
        source = RemoteKeys(
            fetcher,
            jwks_url=auth.jwks_url,
            discovery=discovery,
            min_interval=auth.jwks_refetch_interval,
            max_age=auth.jwks_max_age,
        )
    introspector = None
    if auth.introspection_client_id and auth.introspection_client_secret is not None:
        introspector = Introspector(
            fetcher,
            client_id=auth.introspection_client_id,
            client_secret=auth.introspection_client_secret.get_secret_value(),
            issuer=auth.issuer,
            audience=audience,
            endpoint=auth.introspection_endpoint,
            discovery=discovery,
            cache_ttl=auth.introspection_cache,
            leeway=auth.leeway,
        )
    try:
        return TokenVerifier(
            source,
            issuer=auth.issuer,
            audience=audience,
            algorithms=auth.algorithms,
            leeway=auth.leeway,
            introspector=introspector,
        )
    except ValueError as exc:
        raise _problem(f"auth: {exc}") from exc
