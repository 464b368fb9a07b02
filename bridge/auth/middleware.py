"""Authentication: every FHIR request but the CapabilityStatement needs a token.

The middleware authenticates and puts the `Principal` on the request; each
route then asks `authorize()` for the interaction it serves.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.auth.tokens import Principal, TokenVerifier
from bridge.errors import FhirError, Forbidden, Unauthorized

__all__ = ["AuthMiddleware", "authorize"]

log = logging.getLogger("bridge.auth")
# Each with a trailing slash too: the router serves it as the same address.
_OPEN_PATHS = {
    path + slash
    for path in (
        "/fhir/metadata",
        "/fhir/.well-known/smart-configuration",
        "/healthz",
        "/readyz",
        "/metrics",
    )
    for slash in ("", "/")
}


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier | None,
        render: Callable[[FhirError], Any],
        guard: Callable[[Principal], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.render = render
        # Checks a verified token against what the gateway's store knows (revocations);
        # raises Unauthorized to refuse it.
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in _OPEN_PATHS
            # /admin/* has its own credential (admin.token), checked by its routes.
            or scope["path"].startswith("/admin/")
        ):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if self.verifier is None:
            log.warning("authentication is OFF: serving a request without an access token")
            state["principal"] = None
            await self.app(scope, receive, send)
            return
        token = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credentials.strip():
                    token = credentials.strip()
                break
        try:
            if token is None:
                raise Unauthorized()
            principal = await self.verifier.verify(token)
            if self.guard is not None:
                await self.guard(principal)
            state["principal"] = principal
        except Unauthorized as exc:
            # RFC 6750: no error code when the request carried no token at all.
            exc.headers["WWW-Authenticate"] = (
                'Bearer realm="fhir", error="invalid_token"' if token else 'Bearer realm="fhir"'
            )
            await self.render(exc)(scope, receive, send)
            return
        except FhirError as exc:
            # The issuer's keys or introspection endpoint are unreachable: 503.
            await self.render(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def authorize(principal: Principal | None, resource: str, interaction: str) -> bool:
    """Raise Forbidden unless allowed. True when access is limited to the token's patient.

    Granular grants (`Observation.rs?category=...`) count for nothing here, as
    a yes/no answer cannot carry their restriction; `bridge.auth.access`
    applies them resource by resource."""
    if principal is None:
        return False  # authentication is off (demo or explicit)
    grants = [g for g in principal.scopes.matching(resource, interaction) if g.query is None]
    if not grants:
        raise Forbidden(f"The access token does not allow this on {resource}.")
    if any(g.context in ("user", "system") for g in grants):
        return False
    if principal.patient is None:
        raise Forbidden("A patient scope needs a token with a patient in context.")
    return True
