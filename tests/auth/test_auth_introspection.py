"""Opaque tokens through RFC 7662 introspection, offline: a canned endpoint and clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.auth.fetch import FetchError
from bridge.auth.introspection import Introspector
from bridge.auth.keys import Discovery
from bridge.auth.scopes import Grant
from bridge.auth.tokens import TokenVerifier
from bridge.errors import ServiceUnavailable, Unauthorized

ISSUER = "https://issuer.example.org"
AUDIENCE = "https://fhir.example.org/fhir"
ENDPOINT = "https://issuer.example.org/token/introspection"
NOW = 1_800_000_000.0


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


class Server:
    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.calls: list[tuple[str, dict[str, str], tuple[str, str]]] = []
        self.down = False

    async def get_json(self, url: str) -> Any:
        return {"issuer": ISSUER, "introspection_endpoint": ENDPOINT, "jwks_uri": ISSUER + "/j"}

    async def post_form(self, url: str, form: dict[str, str], auth: tuple[str, str]) -> Any:
        self.calls.append((url, form, auth))
        if self.down:
            raise FetchError(f"POST {url}: ClientConnectorError")
        return self.answers.get(form["token"], {"active": False})


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def active(**claims: Any) -> dict[str, Any]:
    return {
        "active": True,
        "client_id": "portal",
        "sub": "u-9",
        "scope": "launch/patient patient/Observation.rs",
        "patient": "100002",
        "fhirUser": "Patient/100002",
        "exp": int(NOW) + 600,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "jti": "j-1",
        "token_type": "Bearer",
        **claims,
    }


def make(server: Server, clock: Clock, ttl: float = 30) -> TokenVerifier:
    introspector = Introspector(
        server,
        client_id="gateway",
        client_secret="gw-secret",
        issuer=ISSUER,
        audience=AUDIENCE,
        discovery=Discovery(ISSUER, server),
        cache_ttl=ttl,
        clock=clock,
    )
    return TokenVerifier(
        {"keys": []},
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=["ES256"],
        leeway=0,
        introspector=introspector,
    )


def test_introspection_active_token_becomes_principal() -> None:
    server = Server()
    server.answers["opaque-1"] = active()

    principal = run(make(server, Clock()).verify("opaque-1"))

    assert principal.client_id == "portal"
    assert principal.subject == "u-9"
    assert principal.patient == "100002"
    assert principal.fhir_user == "Patient/100002"
    assert principal.token_id == "j-1"
    assert principal.scopes.grants == (Grant("patient", "Observation", frozenset("rs")),)
    url, form, auth = server.calls[0]
    assert (url, form["token"], auth) == (ENDPOINT, "opaque-1", ("gateway", "gw-secret"))


@pytest.mark.parametrize(
    "answer",
    [
        {"active": False},
        {"active": "true", "scope": "user/*.rs"},
        {},
        [],
        "yes",
        active(exp=int(NOW) - 1),
        active(nbf=int(NOW) + 600),
        active(aud="https://other.example.org/fhir"),
        active(aud=["https://other.example.org/fhir"]),
        active(iss="https://evil.example.org"),
        active(token_type="refresh_token"),
        active(cnf={"jkt": "abc"}),
        active(exp="tomorrow"),
        active(scope="patient/observation.read"),
    ],
)
def test_introspection_refuses(answer: Any) -> None:
    server = Server()
    server.answers["t"] = answer

    with pytest.raises(Unauthorized) as info:
        run(make(server, Clock()).verify("t"))

    assert info.value.status == 401


def test_introspection_audience_list_with_ours_is_accepted() -> None:
    server = Server()
    server.answers["t"] = active(aud=["https://other.example.org", AUDIENCE])

    assert run(make(server, Clock()).verify("t")).client_id == "portal"


def test_introspection_answer_is_cached_then_rechecked() -> None:
    server, clock = Server(), Clock()
    server.answers["t"] = active()
    verifier = make(server, clock, ttl=30)
    run(verifier.verify("t"))
    run(verifier.verify("t"))
    assert len(server.calls) == 1

    server.answers["t"] = {"active": False}  # revoked at the authorization server
    clock.now += 29
    assert run(verifier.verify("t")).client_id == "portal"
    clock.now += 2
    with pytest.raises(Unauthorized):
        run(verifier.verify("t"))
    assert len(server.calls) == 2


def test_introspection_cache_never_outlives_the_token() -> None:
    server, clock = Server(), Clock()
    server.answers["t"] = active(exp=int(NOW) + 5)
    verifier = make(server, clock, ttl=300)
    run(verifier.verify("t"))
    clock.now += 6

    with pytest.raises(Unauthorized):
        run(verifier.verify("t"))


def test_introspection_inactive_answer_is_cached_too() -> None:
    server = Server()
    verifier = make(server, Clock())
    for _ in range(3):
        with pytest.raises(Unauthorized):
            run(verifier.verify("unknown"))

    assert len(server.calls) == 1


def test_introspection_unreachable_is_503() -> None:
    server = Server()
    server.down = True

    with pytest.raises(ServiceUnavailable) as info:
        run(make(server, Clock()).verify("t"))

    assert info.value.status == 503
    assert "Retry-After" in info.value.headers


def test_introspection_not_used_for_jwts() -> None:
    server = Server()
    verifier = make(server, Clock())
    jwt_shaped = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"

    with pytest.raises(Unauthorized):
        run(verifier.verify(jwt_shaped))

    assert server.calls == []


def test_opaque_token_without_introspection_is_refused() -> None:
    verifier = TokenVerifier(
        {"keys": []}, issuer=ISSUER, audience=AUDIENCE, algorithms=["ES256"], leeway=0
    )

    with pytest.raises(Unauthorized):
        run(verifier.verify("opaque-1"))
