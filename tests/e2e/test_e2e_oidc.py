"""Tokens from a real, independent OpenID provider (npm oidc-provider) on loopback.

The gateway finds the provider's keys through OpenID Connect discovery, follows
a key rotation, refetches at most once per interval whatever kids tokens make
up, introspects opaque tokens (and notices revocation once its short cache
expires), and refuses forged, wrong-audience, wrong-issuer, `alg: none`, HMAC
and wrong-key tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from bridge.mock import MockHospital
from tests.oidc.provider import OidcProvider, running_provider
from tests.support import Gateway, free_port, self_signed_certificate, start_gateway

pytestmark = pytest.mark.e2e

PATIENT = "100002"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    with running_provider(tmp_path_factory.mktemp("oidc")) as running:
        yield running


def oidc_auth(issuer: str, **more: Any) -> dict[str, Any]:
    return {
        "auth": {
            "mode": "jwt",
            "issuer": issuer,
            "introspection_client_id": "gateway",
            "introspection_client_secret": "gateway-secret",
            **more,
        }
    }


def get(gw: Gateway, token: str, path: str = f"/Patient/{PATIENT}") -> httpx.Response:
    return httpx.get(f"{gw.base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    loaded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return loaded


def assert_401(reply: httpx.Response) -> None:
    assert reply.status_code == 401, reply.text
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert reply.json()["resourceType"] == "OperationOutcome"


@pytest.fixture
def gw(
    provider: OidcProvider, mock_hospital_server: MockHospital, tmp_path: Path
) -> Iterator[Gateway]:
    with start_gateway(
        tmp_path, mock_hospital_server.ehr_url, extra=oidc_auth(provider.issuer)
    ) as gateway:
        yield gateway


# -- JWT access tokens through discovery and JWKS ---------------------------------------


def test_oidc_backend_service_token_through_discovery(
    provider: OidcProvider, gw: Gateway, fhir: Any
) -> None:
    before = provider.stats()
    token = provider.token("backend", "system/*.rs", gw.base)

    reply = get(gw, token)
    again = get(gw, token, f"/Patient?_id={PATIENT}")

    assert reply.status_code == 200, reply.text
    assert fhir(reply.json())["id"] == PATIENT
    assert again.status_code == 200
    after = provider.stats()
    assert after.get("/.well-known/openid-configuration", 0) == (
        before.get("/.well-known/openid-configuration", 0) + 1
    )
    assert after.get("/jwks", 0) == before.get("/jwks", 0) + 1
    assert claims_of(token)["aud"] == gw.base


def test_oidc_patient_token_sees_its_patient_only(provider: OidcProvider, gw: Gateway) -> None:
    token = provider.token(
        "backend", "launch/patient patient/*.rs", gw.base, patient=PATIENT, fhir_user="Patient/x"
    )

    assert get(gw, token).status_code == 200
    other = get(gw, token, "/Patient/100003")
    assert other.status_code == 403
    assert other.json()["issue"][0]["code"] == "forbidden"


def test_oidc_token_for_another_resource_server_is_refused(
    provider: OidcProvider, gw: Gateway
) -> None:
    token = provider.token("backend", "system/*.rs", "http://127.0.0.1:1/fhir")

    assert_401(get(gw, token))


def test_oidc_token_checked_against_another_issuer_is_refused(
    provider: OidcProvider, mock_hospital_server: MockHospital, tmp_path: Path
) -> None:
    # The right keys (a configured JWKS URL), but the gateway trusts another issuer name.
    extra = oidc_auth("https://issuer.other.test", jwks_url=f"{provider.issuer}/jwks")
    with start_gateway(tmp_path, mock_hospital_server.ehr_url, extra=extra) as gateway:
        token = provider.token("backend", "system/*.rs", gateway.base)
        assert_401(get(gateway, token))


def test_oidc_forged_tokens_are_refused(provider: OidcProvider, gw: Gateway) -> None:
    real = provider.token("backend", "system/*.rs", gw.base)
    header, payload, signature = real.split(".")
    claims = claims_of(real)
    widened = {**claims, "scope": "system/*.cruds"}
    public = provider.jwks()["keys"][0]
    attacker = RSAKey.generate_key(2048, parameters={"kid": public["kid"], "alg": "RS256"})
    hmac_header = b64json({"alg": "HS256", "typ": "at+jwt", "kid": public["kid"]})
    mac = hmac.new(
        json.dumps(public).encode(), f"{hmac_header}.{payload}".encode(), hashlib.sha256
    ).digest()
    forged = {
        "tampered payload": f"{header}.{b64json(widened)}.{signature}",
        "alg none": f"{b64json({'alg': 'none', 'kid': public['kid']})}.{payload}.",
        "HMAC with the public key": f"{hmac_header}.{payload}.{b64url(mac)}",
        "another key, the provider's kid": jwt.encode(
            {"alg": "RS256", "kid": public["kid"]}, claims, attacker
        ),
        "expired": jwt.encode(
            {"alg": "RS256", "kid": public["kid"]},
            {**claims, "exp": int(time.time()) - 3600},
            attacker,
        ),
    }
    assert get(gw, real).status_code == 200
    for name, token in forged.items():
        reply = get(gw, token)
        assert reply.status_code == 401, name
        assert reply.headers["www-authenticate"].startswith("Bearer"), name


# -- key rotation and the refetch rate limit -------------------------------------------


def test_oidc_key_rotation_new_kid_refetches(
    mock_hospital_server: MockHospital, tmp_path: Path
) -> None:
    with running_provider(tmp_path / "rotating") as rotating:
        extra = oidc_auth(rotating.issuer, jwks_refetch_interval=0)
        with start_gateway(tmp_path, mock_hospital_server.ehr_url, extra=extra) as gateway:
            first = rotating.token("backend", "system/*.rs", gateway.base)
            assert get(gateway, first).status_code == 200
            old_kid = rotating.kid

            rotating.restart()  # same issuer and port, new signing key
            second = rotating.token("backend", "system/*.rs", gateway.base)

            assert rotating.kid != old_kid
            assert get(gateway, second).status_code == 200
            assert rotating.stats().get("/jwks") == 1  # the restarted provider was asked once


def test_oidc_unknown_kids_do_not_flood_the_provider(
    provider: OidcProvider, mock_hospital_server: MockHospital, tmp_path: Path
) -> None:
    extra = oidc_auth(provider.issuer, jwks_refetch_interval=3600)
    with start_gateway(tmp_path, mock_hospital_server.ehr_url, extra=extra) as gateway:
        real = provider.token("backend", "system/*.rs", gateway.base)
        assert get(gateway, real).status_code == 200
        before = provider.stats().get("/jwks", 0)
        claims = claims_of(real)

        for n in range(15):
            key = RSAKey.generate_key(2048, parameters={"kid": f"made-up-{n}", "alg": "RS256"})
            token = jwt.encode({"alg": "RS256", "kid": f"made-up-{n}"}, claims, key)
            assert_401(get(gateway, token))

        assert provider.stats().get("/jwks", 0) == before


def test_oidc_provider_down_at_start_is_503_until_it_comes_up(
    mock_hospital_server: MockHospital, tmp_path: Path
) -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    extra = oidc_auth(issuer, jwks_refetch_interval=0)
    with start_gateway(tmp_path, mock_hospital_server.ehr_url, extra=extra) as gateway:
        some_jwt = f"{b64json({'alg': 'RS256', 'kid': 'k'})}.{b64json({'iss': issuer})}.c2ln"
        down = get(gateway, some_jwt)
        assert down.status_code == 503
        assert down.json()["issue"][0]["code"] == "transient"
        assert int(down.headers["retry-after"]) >= 1

        with running_provider(tmp_path / "late", port=port) as late:
            token = late.token("backend", "system/*.rs", gateway.base)
            assert get(gateway, token).status_code == 200


# -- opaque tokens through introspection ----------------------------------------------


def test_oidc_opaque_token_through_introspection(provider: OidcProvider, gw: Gateway) -> None:
    before = provider.stats().get("/token/introspection", 0)
    token = provider.token("opaque-app", "launch/patient patient/*.rs", gw.base, patient=PATIENT)
    assert token.count(".") == 0  # opaque

    assert get(gw, token).status_code == 200
    assert get(gw, token).status_code == 200  # from the cache
    assert get(gw, token, "/Patient/100003").status_code == 403  # its patient claim applies
    assert provider.stats().get("/token/introspection", 0) == before + 1


def test_oidc_inactive_opaque_token_is_401(provider: OidcProvider, gw: Gateway) -> None:
    assert_401(get(gw, "not-a-token-the-provider-issued"))


def test_oidc_opaque_token_for_another_resource_server_is_401(
    provider: OidcProvider, gw: Gateway
) -> None:
    token = provider.token("opaque-app", "system/*.rs", "http://127.0.0.1:1/fhir")

    assert_401(get(gw, token))


def test_oidc_revoked_opaque_token_is_cut_off_when_the_cache_expires(
    provider: OidcProvider, mock_hospital_server: MockHospital, tmp_path: Path
) -> None:
    extra = oidc_auth(provider.issuer, introspection_cache=1)
    with start_gateway(tmp_path, mock_hospital_server.ehr_url, extra=extra) as gateway:
        token = provider.token("opaque-app", "system/*.rs", gateway.base)
        assert get(gateway, token).status_code == 200
        before = provider.stats().get("/token/introspection", 0)

        provider.revoke("opaque-app", token)

        deadline = time.monotonic() + 20
        reply = get(gateway, token)
        while reply.status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
            reply = get(gateway, token)
        assert_401(reply)
        assert provider.stats().get("/token/introspection", 0) > before


def test_oidc_revoked_opaque_token_is_served_from_the_cache_meanwhile(
    provider: OidcProvider, mock_hospital_server: MockHospital, tmp_path: Path
) -> None:
    extra = oidc_auth(provider.issuer, introspection_cache=300)
    with start_gateway(tmp_path, mock_hospital_server.ehr_url, extra=extra) as gateway:
        token = provider.token("opaque-app", "system/*.rs", gateway.base)
        assert get(gateway, token).status_code == 200
        provider.revoke("opaque-app", token)

        assert get(gateway, token).status_code == 200  # within the configured 300 s


# -- TLS to the provider: verified, against a configured CA bundle -----------------------


def test_oidc_https_provider_needs_its_ca_bundle(
    mock_hospital_server: MockHospital, tmp_path: Path
) -> None:
    cert, key = self_signed_certificate(tmp_path / "tls")
    with running_provider(tmp_path / "https", tls=(cert, key)) as secure:
        assert secure.issuer.startswith("https://")
        trusted = oidc_auth(secure.issuer, ca_file=str(cert))
        with start_gateway(tmp_path, mock_hospital_server.ehr_url, extra=trusted) as gateway:
            token = secure.token("backend", "system/*.rs", gateway.base)
            assert get(gateway, token).status_code == 200
        with start_gateway(
            tmp_path, mock_hospital_server.ehr_url, extra=oidc_auth(secure.issuer)
        ) as untrusting:
            token = secure.token("backend", "system/*.rs", untrusting.base)
            assert get(untrusting, token).status_code == 503  # the certificate is not trusted
