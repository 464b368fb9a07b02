"""Hostile and careless input to authentication, offline: odd claims, odd answers, odd URLs.

Each case here once answered 500 or let a token through in a shape that matched
nobody's revocation or Consent; now it is a 401 (or a 503 for the issuer's side).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey, KeySet

from bridge.auth.access import access
from bridge.auth.fetch import AiohttpFetcher, FetchError, check_url
from bridge.auth.introspection import Introspector
from bridge.auth.keys import Discovery, RemoteKeys
from bridge.auth.scopes import parse_scopes
from bridge.auth.tokens import Principal, TokenVerifier
from bridge.errors import Forbidden, ServiceUnavailable, Unauthorized
from tests.auth.test_auth_tokens import AUDIENCE, ISSUER, claims

NOW = 1_800_000_000.0


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.fixture(scope="module")
def key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256", "use": "sig"})


def verifier(key: ECKey) -> TokenVerifier:
    jwks = {"keys": [key.as_dict(private=False)]}
    return TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE, algorithms=["ES256"], leeway=30)


def signed(key: ECKey, payload: dict[str, Any]) -> str:
    return jwt.encode({"alg": "ES256", "kid": "k1"}, payload, key)


def refused(v: TokenVerifier, token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        run(v.verify(token))
    assert info.value.status == 401
    return info.value


# -- JWT claims -------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"exp": 10**400},  # valid to joserfc (an int), too large for a float: was a 500
        {"iat": -(10**400)},  # likewise for iat
    ],
)
def test_token_date_too_large_for_a_float_is_refused(key: ECKey, extra: dict[str, Any]) -> None:
    refused(verifier(key), signed(key, claims(**extra)))


def test_token_payload_nested_past_the_recursion_limit_is_refused(key: ECKey) -> None:
    payload = b'{"iss":"' + ISSUER.encode() + b'","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    token = jws.serialize_compact({"alg": "ES256", "kid": "k1"}, payload, key)

    refused(verifier(key), token)  # was RecursionError: a 500


@pytest.mark.parametrize(
    "extra",
    [
        # As text these matched no revocation and no Consent of the app they name.
        {"client_id": ["wellness-app"]},
        {"client_id": None, "azp": {"id": "wellness-app"}},
        {"client_id": True},
        {"fhirUser": {"reference": "Patient/1"}},
        # A patient claim becomes searches and compartment checks: a FHIR id only.
        {"patient": ["100001", "100002"]},
        {"patient": "100001,100002"},
        {"patient": "Patient/100002"},
        {"patient": "1" * 65},
        {"patient": True},
    ],
)
def test_token_claim_of_the_wrong_type_or_shape_is_refused(
    key: ECKey, extra: dict[str, Any]
) -> None:
    refused(verifier(key), signed(key, claims(**extra)))


def test_token_numeric_ids_still_read_as_text(key: ECKey) -> None:
    principal = run(verifier(key).verify(signed(key, claims(client_id=42, patient=100001))))

    assert (principal.client_id, principal.patient) == ("42", "100001")


# -- introspection answers ------------------------------------------------------------


class Server:
    def __init__(self, answer: Any, metadata: dict[str, Any] | None = None) -> None:
        self.answer = answer
        self.metadata = metadata or {"issuer": ISSUER}

    async def get_json(self, url: str) -> Any:
        return self.metadata

    async def post_form(self, url: str, form: dict[str, str], auth: tuple[str, str]) -> Any:
        return self.answer


def introspecting(
    server: Server, *, endpoint: str | None = "https://issuer.example.org/i"
) -> TokenVerifier:
    introspector = Introspector(
        server,
        client_id="gateway",
        client_secret="gw-secret",
        issuer=ISSUER,
        audience=AUDIENCE,
        endpoint=endpoint,
        discovery=Discovery(ISSUER, server),
        clock=lambda: NOW,
    )
    return TokenVerifier(
        {"keys": []},
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=["ES256"],
        leeway=0,
        introspector=introspector,
    )


def answer(**extra: Any) -> dict[str, Any]:
    return {"active": True, "client_id": "portal", "scope": "user/*.rs", "exp": NOW + 600, **extra}


@pytest.mark.parametrize(
    "reply",
    [
        answer(exp=10**400),  # was OverflowError: a 500
        answer(iat=10**400),  # likewise
        answer(exp=float("nan")),  # would never expire
        answer(exp=float("inf")),
        answer(nbf="tomorrow"),  # was ignored
        answer(iat=NOW + 3600),  # issued in the future: would pass every revocation
        answer(client_id=["portal"]),
        answer(patient={"id": "100001"}),
        answer(patient="100001/_history/2"),
    ],
)
def test_introspection_garbage_answer_is_refused(reply: dict[str, Any]) -> None:
    with pytest.raises(Unauthorized):
        run(introspecting(Server(reply)).verify("opaque"))


def test_introspection_exp_null_is_no_expiry_not_a_500() -> None:
    principal = run(introspecting(Server(answer(exp=None))).verify("opaque"))  # was a TypeError

    assert principal.client_id == "portal"


def test_introspection_endpoint_discovery_names_that_is_no_url_is_503() -> None:
    server = Server(answer(), {"issuer": ISSUER, "introspection_endpoint": "https://[::1"})

    with pytest.raises(ServiceUnavailable):  # was ValueError: a 500
        run(introspecting(server, endpoint=None).verify("opaque"))


# -- URLs and key sets ------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://[::1", "http://[127.0.0.1/x", "https://[bad]/jwks"])
def test_fetch_check_url_names_an_unparsable_url(url: str) -> None:
    assert check_url(url) == f"{url} is not a valid URL"  # was ValueError


def test_fetch_host_name_idna_cannot_encode_is_a_fetch_error() -> None:
    # An empty label: IDNA refuses it before any DNS lookup (offline).
    with pytest.raises(FetchError, match=r"^GET https://a\.\.b/jwks: UnicodeError$"):
        run(AiohttpFetcher(timeout=1).get_json("https://a..b/jwks"))


class KeyIssuer:
    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks

    async def get_json(self, url: str) -> Any:
        return self.jwks

    async def post_form(self, url: str, form: dict[str, str], auth: tuple[str, str]) -> Any:
        raise AssertionError("no introspection here")


def test_keys_one_unreadable_key_does_not_lock_every_token_out(key: ECKey) -> None:
    unknown_curve = {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA", "kid": "odd"}
    jwks = {"keys": [unknown_curve, *KeySet([key]).as_dict(private=False)["keys"]]}
    source = RemoteKeys(KeyIssuer(jwks), jwks_url="https://issuer.example.org/jwks")
    v = TokenVerifier(source, issuer=ISSUER, audience=AUDIENCE, algorithms=["ES256"], leeway=0)

    # Before: the whole set was refused, so every token was a 503 until the issuer changed.
    assert run(v.verify(signed(key, claims()))).client_id == "app"


# -- granular scopes and a body of the wrong shape ----------------------------------------


@pytest.mark.parametrize(
    "category",
    [[{"coding": ["laboratory"]}], [{"coding": "laboratory"}], {"coding": [None]}],
)
def test_granular_write_of_a_malformed_body_is_403_not_500(category: Any) -> None:
    principal = Principal(
        "app", "u", None, parse_scopes("user/Observation.cruds?category=laboratory"), None
    )
    body = {"resourceType": "Observation", "category": category}
    rules = access(principal, "Observation", "c")
    assert rules is not None

    assert not rules.allows(body)  # was AttributeError: a 500
    with pytest.raises(Forbidden):
        rules.check_write(body)
