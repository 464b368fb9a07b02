"""RemoteKeys and discovery, offline: a canned issuer and a hand-driven clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from bridge.auth.fetch import FetchError, check_url
from bridge.auth.keys import Discovery, RemoteKeys
from bridge.auth.tokens import TokenVerifier
from bridge.errors import ServiceUnavailable, Unauthorized

ISSUER = "https://issuer.example.org"
AUDIENCE = "https://fhir.example.org/fhir"
JWKS_URI = "https://issuer.example.org/jwks"


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid, "alg": "ES256", "use": "sig"})


class Issuer:
    """A canned authorization server: discovery and a JWKS; counts the calls."""

    def __init__(self, *keys: ECKey) -> None:
        self.keys = list(keys)
        self.calls: list[str] = []
        self.down = False
        self.metadata: dict[str, Any] = {"issuer": ISSUER, "jwks_uri": JWKS_URI}

    async def get_json(self, url: str) -> Any:
        self.calls.append(url)
        if self.down:
            raise FetchError(f"GET {url}: ClientConnectorError")
        if url.endswith("/.well-known/openid-configuration"):
            return self.metadata
        if url == JWKS_URI:
            return KeySet(self.keys).as_dict(private=False)
        raise FetchError(f"GET {url}: HTTP 404")

    async def post_form(self, url: str, form: dict[str, str], auth: tuple[str, str]) -> Any:
        raise AssertionError("no introspection here")

    def jwks_calls(self) -> int:
        return self.calls.count(JWKS_URI)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token(signer: ECKey, **claims: Any) -> str:
    payload = {"iss": ISSUER, "aud": AUDIENCE, "exp": 2**31, "scope": "system/*.rs", **claims}
    return jwt.encode({"alg": "ES256", "kid": signer.kid}, payload, signer)


def make(issuer: Issuer, clock: Clock, interval: float = 30) -> tuple[TokenVerifier, RemoteKeys]:
    keys = RemoteKeys(
        issuer, discovery=Discovery(ISSUER, issuer), min_interval=interval, clock=clock
    )
    verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, algorithms=["ES256"], leeway=0)
    return verifier, keys


def test_keys_found_through_discovery_on_first_token() -> None:
    signer = key("k1")
    issuer = Issuer(signer)
    verifier, _ = make(issuer, Clock())

    principal = run(verifier.verify(token(signer, client_id="svc")))

    assert principal.client_id == "svc"
    assert issuer.calls == [f"{ISSUER}/.well-known/openid-configuration", JWKS_URI]


def test_keys_rotation_unknown_kid_refetches() -> None:
    old, new = key("k1"), key("k2")
    issuer, clock = Issuer(old), Clock()
    verifier, _ = make(issuer, clock)
    run(verifier.verify(token(old)))
    issuer.keys = [new]
    clock.now += 31

    assert run(verifier.verify(token(new, client_id="rotated"))).client_id == "rotated"
    assert issuer.jwks_calls() == 2


def test_keys_unknown_kids_refetch_at_most_once_per_interval() -> None:
    signer = key("k1")
    issuer, clock = Issuer(signer), Clock()
    verifier, _ = make(issuer, clock)
    run(verifier.verify(token(signer)))
    clock.now += 31

    for n in range(50):
        with pytest.raises(Unauthorized):
            run(verifier.verify(token(key(f"random-{n}"))))

    assert issuer.jwks_calls() == 2  # the first fetch, and one refetch for the whole flood


def test_keys_concurrent_unknown_kids_share_one_fetch() -> None:
    signer = key("k1")
    issuer, clock = Issuer(signer), Clock()
    verifier, _ = make(issuer, clock, interval=0)

    async def flood() -> list[Any]:
        tokens = [token(signer, jti=str(n)) for n in range(20)]
        return await asyncio.gather(*(verifier.verify(t) for t in tokens))

    assert len(run(flood())) == 20
    assert issuer.jwks_calls() == 1


def test_keys_unreachable_at_start_is_503_then_recovers() -> None:
    signer = key("k1")
    issuer, clock = Issuer(signer), Clock()
    issuer.down = True
    verifier, _ = make(issuer, clock)

    with pytest.raises(ServiceUnavailable) as info:
        run(verifier.verify(token(signer)))
    assert info.value.status == 503
    assert info.value.headers["Retry-After"] == "30"
    with pytest.raises(ServiceUnavailable):
        run(verifier.verify(token(signer)))  # within the interval: no new attempt
    assert len(issuer.calls) == 1

    issuer.down = False
    clock.now += 30
    assert run(verifier.verify(token(signer, client_id="later"))).client_id == "later"


def test_keys_kept_when_a_refetch_fails() -> None:
    signer = key("k1")
    issuer, clock = Issuer(signer), Clock()
    verifier, _ = make(issuer, clock)
    run(verifier.verify(token(signer)))
    issuer.down = True
    clock.now += 31

    with pytest.raises(Unauthorized):
        run(verifier.verify(token(key("unknown"))))
    assert run(verifier.verify(token(signer, jti="x"))).client_id == "-"


def test_keys_discovery_of_another_issuer_is_not_trusted() -> None:
    signer = key("k1")
    issuer = Issuer(signer)
    issuer.metadata["issuer"] = "https://evil.example.org"
    verifier, _ = make(issuer, Clock())

    with pytest.raises(ServiceUnavailable):
        run(verifier.verify(token(signer)))
    assert JWKS_URI not in issuer.calls


def test_keys_plain_http_jwks_uri_off_loopback_is_not_used() -> None:
    signer = key("k1")
    issuer = Issuer(signer)
    issuer.metadata["jwks_uri"] = "http://issuer.example.org/jwks"
    verifier, _ = make(issuer, Clock())

    with pytest.raises(ServiceUnavailable):
        run(verifier.verify(token(signer)))


def test_keys_configured_jwks_url_skips_discovery() -> None:
    signer = key("k1")
    issuer = Issuer(signer)
    keys = RemoteKeys(issuer, jwks_url=JWKS_URI)
    verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, algorithms=["ES256"], leeway=0)

    run(verifier.verify(token(signer)))

    assert issuer.calls == [JWKS_URI]


def test_keys_private_parts_of_a_jwks_are_ignored() -> None:
    signer = key("k1")
    issuer = Issuer(signer)

    async def private(url: str) -> Any:
        issuer.calls.append(url)
        return KeySet([signer]).as_dict(private=True)

    issuer.get_json = private  # type: ignore[method-assign]
    keys = RemoteKeys(issuer, jwks_url=JWKS_URI)

    loaded = run(keys.get("k1"))

    assert all(not k.is_private for k in loaded.keys)


@pytest.mark.parametrize(
    ("url", "fine"),
    [
        ("https://login.example.org/jwks", True),
        ("http://127.0.0.1:8080/jwks", True),
        ("http://localhost/jwks", True),
        ("http://login.example.org/jwks", False),
        ("ftp://login.example.org/jwks", False),
        ("file:///etc/passwd", False),
    ],
)
def test_fetch_check_url_https_or_loopback(url: str, fine: bool) -> None:
    assert (check_url(url) is None) is fine
