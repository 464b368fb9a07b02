"""TokenVerifier: only well-signed, current tokens for this server become a Principal."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from bridge.auth.devissuer import DevIssuer
from bridge.auth.scopes import Grant
from bridge.auth.tokens import Principal, TokenVerifier
from bridge.errors import Unauthorized

ISSUER = "https://issuer.example.org"
AUDIENCE = "https://fhir.example.org/fhir"
SCOPE = "openid fhirUser launch/patient patient/Patient.rs offline_access"


@pytest.fixture(scope="module")
def issuer() -> DevIssuer:
    return DevIssuer(ISSUER, AUDIENCE)


def verifier(
    issuer: DevIssuer, *, iss: str = ISSUER, aud: str = AUDIENCE, leeway: int = 30
) -> TokenVerifier:
    return TokenVerifier(
        issuer.jwks(), issuer=iss, audience=aud, algorithms=["ES256"], leeway=leeway
    )


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u1",
        "client_id": "app",
        "scope": "user/*.*",
        "iat": now,
        "exp": now + 600,
        **extra,
    }


def assert_refused(v: TokenVerifier, token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        run(v.verify(token))
    assert info.value.status == 401
    assert info.value.code == "login"
    return info.value


def test_token_good_verifies_into_principal(issuer: DevIssuer) -> None:
    token = issuer.mint(scope=SCOPE, client_id="portal-app", patient="100001", subject="pat-1")

    principal = run(verifier(issuer).verify(token))

    assert isinstance(principal, Principal)
    assert principal.client_id == "portal-app"
    assert principal.subject == "pat-1"
    assert principal.patient == "100001"
    assert principal.scopes.grants == (Grant("patient", "Patient", frozenset("rs")),)
    assert principal.token_id


def test_token_without_patient_claim(issuer: DevIssuer) -> None:
    principal = run(verifier(issuer).verify(issuer.mint(scope="user/*.read", client_id="admin")))

    assert principal.patient is None
    assert principal.client_id == "admin"


def test_token_expired_is_refused(issuer: DevIssuer) -> None:
    token = issuer.mint(scope=SCOPE, client_id="app", patient="1", lifetime=-3600)

    error = assert_refused(verifier(issuer), token)

    assert error.diagnostics == "The access token is invalid or expired."


def test_token_expired_within_leeway_is_accepted(issuer: DevIssuer) -> None:
    token = issuer.mint(scope=SCOPE, client_id="app", patient="1", lifetime=-5)

    assert run(verifier(issuer, leeway=30).verify(token)).patient == "1"


def test_token_wrong_audience_is_refused(issuer: DevIssuer) -> None:
    token = issuer.mint(scope=SCOPE, client_id="app", patient="1")

    assert_refused(verifier(issuer, aud="https://other-fhir.example.org/fhir"), token)


def test_token_from_issuer_minting_for_another_audience_is_refused(issuer: DevIssuer) -> None:
    other = DevIssuer(ISSUER, "https://other-fhir.example.org/fhir")
    token = other.mint(scope=SCOPE, client_id="app", patient="1")

    assert_refused(
        TokenVerifier(
            other.jwks(), issuer=ISSUER, audience=AUDIENCE, algorithms=["ES256"], leeway=0
        ),
        token,
    )


def test_token_wrong_issuer_is_refused(issuer: DevIssuer) -> None:
    token = issuer.mint(scope=SCOPE, client_id="app", patient="1")

    assert_refused(verifier(issuer, iss="https://another-issuer.example.org"), token)


def test_token_signed_with_another_key_is_refused(issuer: DevIssuer) -> None:
    impostor = DevIssuer(ISSUER, AUDIENCE)  # same names, its own key
    token = impostor.mint(scope="user/*.*", client_id="app")

    assert_refused(verifier(issuer), token)


def test_token_signed_with_another_key_under_the_right_kid_is_refused(issuer: DevIssuer) -> None:
    kid = issuer.jwks()["keys"][0]["kid"]
    attacker_key = ECKey.generate_key("P-256", parameters={"kid": kid, "alg": "ES256"})
    token = jwt.encode({"alg": "ES256", "kid": kid, "typ": "JWT"}, claims(), attacker_key)

    assert_refused(verifier(issuer), token)


def test_token_tampered_payload_is_refused(issuer: DevIssuer) -> None:
    header, payload, signature = issuer.mint(
        scope="patient/Patient.rs", client_id="app", patient="100001"
    ).split(".")
    body = json.loads(unb64url(payload))
    body["scope"] = "user/*.*"
    body.pop("patient")

    assert_refused(verifier(issuer), f"{header}.{b64url_json(body)}.{signature}")


def test_token_tampered_signature_is_refused(issuer: DevIssuer) -> None:
    header, payload, signature = issuer.mint(scope=SCOPE, client_id="app").split(".")
    raw = bytearray(unb64url(signature))
    raw[0] ^= 0x01

    assert_refused(verifier(issuer), f"{header}.{payload}.{b64url(bytes(raw))}")


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none"},
        {"alg": "none", "typ": "JWT"},
        {"alg": "None"},
        {"alg": "NONE"},
    ],
)
def test_token_alg_none_is_refused(issuer: DevIssuer, header: dict[str, str]) -> None:
    token = f"{b64url_json(header)}.{b64url_json(claims())}."

    assert_refused(verifier(issuer), token)


def test_token_alg_none_with_the_right_kid_is_refused(issuer: DevIssuer) -> None:
    kid = issuer.jwks()["keys"][0]["kid"]
    token = f"{b64url_json({'alg': 'none', 'kid': kid})}.{b64url_json(claims())}."

    assert_refused(verifier(issuer), token)


def test_token_hs256_signed_with_the_public_key_is_refused(issuer: DevIssuer) -> None:
    public_jwk = issuer.jwks()["keys"][0]
    for secret in (
        json.dumps(public_jwk).encode(),
        json.dumps(public_jwk, separators=(",", ":")).encode(),
        json.dumps(issuer.jwks()).encode(),
    ):
        header = b64url_json({"alg": "HS256", "typ": "JWT", "kid": public_jwk["kid"]})
        payload = b64url_json(claims())
        mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()

        assert_refused(verifier(issuer), f"{header}.{payload}.{b64url(mac)}")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d.e",
        "...",
        "é.é.é",
        "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln",
        f"{b64url(b'[]')}.{b64url(b'{}')}.",
        f"{b64url(b'null')}.{b64url(b'{}')}.",
        f"{b64url(b'{')}.{b64url(b'{}')}.",
    ],
)
def test_token_garbage_is_refused(issuer: DevIssuer, token: str) -> None:
    assert_refused(verifier(issuer), token)


def test_token_with_a_malformed_resource_scope_is_refused(issuer: DevIssuer) -> None:
    token = issuer.mint(scope="openid patient/observation.read", client_id="app", patient="1")

    error = assert_refused(verifier(issuer), token)

    assert error.diagnostics == "The access token carries a scope this server refuses."


def test_token_error_does_not_say_why(issuer: DevIssuer) -> None:
    expired = issuer.mint(scope=SCOPE, client_id="app", lifetime=-3600)
    forged = DevIssuer(ISSUER, AUDIENCE).mint(scope=SCOPE, client_id="app")

    a = assert_refused(verifier(issuer), expired)
    b = assert_refused(verifier(issuer), forged)

    assert a.diagnostics == b.diagnostics


@pytest.mark.parametrize(
    "algorithms",
    [["HS256"], ["ES256", "HS256"], ["none"], ["HS512"], ["RS256", "none"]],
)
def test_token_verifier_refuses_symmetric_or_none_algorithms(
    issuer: DevIssuer, algorithms: list[str]
) -> None:
    with pytest.raises(ValueError, match="algorithms not allowed for access tokens"):
        TokenVerifier(
            issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, algorithms=algorithms, leeway=0
        )


def test_token_verifier_accepts_asymmetric_algorithms(issuer: DevIssuer) -> None:
    TokenVerifier(
        issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, algorithms=["ES256", "RS256"], leeway=0
    )


# -- claims, with a key of our own to sign any claim set ------------------------------------


@pytest.fixture(scope="module")
def own_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "test-key", "alg": "ES256"})


def own_verifier(key: ECKey) -> TokenVerifier:
    jwks = {"keys": [key.as_dict(private=False)]}
    return TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE, algorithms=["ES256"], leeway=30)


def signed(key: ECKey, payload: dict[str, Any]) -> str:
    return jwt.encode({"alg": "ES256", "kid": "test-key", "typ": "JWT"}, payload, key)


def test_token_own_key_good_claims_verify(own_key: ECKey) -> None:
    principal = run(
        own_verifier(own_key).verify(signed(own_key, claims(jti="j-1", patient=100001)))
    )

    assert principal.client_id == "app"
    assert principal.patient == "100001"
    assert principal.token_id == "j-1"


def test_token_azp_stands_in_for_client_id(own_key: ECKey) -> None:
    payload = claims(azp="other-app")
    del payload["client_id"]

    assert run(own_verifier(own_key).verify(signed(own_key, payload))).client_id == "other-app"


@pytest.mark.parametrize("claim", ["exp", "iss", "aud"])
def test_token_without_an_essential_claim_is_refused(own_key: ECKey, claim: str) -> None:
    payload = claims()
    del payload[claim]

    assert_refused(own_verifier(own_key), signed(own_key, payload))


def test_token_not_yet_valid_is_refused(own_key: ECKey) -> None:
    payload = claims(nbf=int(time.time()) + 3600)

    assert_refused(own_verifier(own_key), signed(own_key, payload))


def test_token_audience_list_containing_ours_is_accepted(own_key: ECKey) -> None:
    payload = claims(aud=["https://other.example.org", AUDIENCE])

    assert run(own_verifier(own_key).verify(signed(own_key, payload))).client_id == "app"


def test_token_audience_list_without_ours_is_refused(own_key: ECKey) -> None:
    payload = claims(aud=["https://other.example.org"])

    assert_refused(own_verifier(own_key), signed(own_key, payload))


@pytest.mark.parametrize("exp", ["tomorrow", None, [1], {"at": 1}])
def test_token_with_a_malformed_exp_is_refused(own_key: ECKey, exp: Any) -> None:
    assert_refused(own_verifier(own_key), signed(own_key, claims(exp=exp)))


def test_token_scope_that_is_not_a_string_is_refused(own_key: ECKey) -> None:
    payload = claims(scope=["patient/Patient.rs"])

    assert_refused(own_verifier(own_key), signed(own_key, payload))


def test_token_cache_still_refuses_a_token_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as clock

    from bridge.auth.devissuer import DevIssuer
    from bridge.auth.tokens import TokenVerifier
    from bridge.errors import Unauthorized

    issuer = DevIssuer("https://issuer.test", "https://fhir.test")
    token = issuer.mint(scope="user/*.read", client_id="app", lifetime=60)
    verifier = TokenVerifier(
        issuer.jwks(),
        issuer="https://issuer.test",
        audience="https://fhir.test",
        algorithms=["ES256"],
        leeway=5,
    )
    assert run(verifier.verify(token)).client_id == "app"
    assert token in verifier._cache
    later = clock.time() + 120
    monkeypatch.setattr("bridge.auth.tokens.time.time", lambda: later)
    with pytest.raises(Unauthorized):
        run(verifier.verify(token))
