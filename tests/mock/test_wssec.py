"""The scheduling vendor's WS-Security UsernameToken checks, in-process."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from lxml import etree

from bridge.mock.state import VendorError
from bridge.mock.wssec import (
    PASSWORD_DIGEST,
    PASSWORD_TEXT,
    NonceCache,
    UsernameToken,
    password_digest,
    read_token,
    verify,
)
from tests.mock.clients import security_header, utc_stamp

NOW = dt.datetime(2026, 11, 24, 14, 0, tzinfo=dt.UTC)
NONCE = b"0123456789abcdef"


def _token(password: str = "secret", created: str | None = None, **kw) -> UsernameToken:
    created = created or utc_stamp(NOW)
    values = {
        "username": "bridge",
        "password": password_digest(NONCE, created, password),
        "password_type": PASSWORD_DIGEST,
        "nonce": base64.b64encode(NONCE).decode(),
        "created": created,
    }
    values.update(kw)
    return UsernameToken(**values)


def _verify(token: UsernameToken, nonces: NonceCache | None = None, now: dt.datetime = NOW):
    verify(
        token,
        username="bridge",
        password="secret",
        now=now.timestamp(),
        nonces=nonces if nonces is not None else NonceCache(),
    )


def _code(call) -> str:
    with pytest.raises(VendorError) as info:
        call()
    return info.value.code


def test_password_digest_matches_the_oasis_formula() -> None:
    # Base64(SHA-1(nonce + created + password)), worked out independently:
    # sha1(b"0123456789abcdef" b"2026-11-24T14:00:00Z" b"secret").
    import hashlib

    raw = hashlib.sha1(NONCE + b"2026-11-24T14:00:00Z" + b"secret").digest()
    assert (
        password_digest(NONCE, "2026-11-24T14:00:00Z", "secret") == base64.b64encode(raw).decode()
    )


def test_verify_accepts_a_good_token_once() -> None:
    nonces = NonceCache()
    _verify(_token(), nonces)
    assert _code(lambda: _verify(_token(), nonces)) == "SCHED-REPLAY"


def test_verify_rejects_a_bad_digest_or_user() -> None:
    assert _code(lambda: _verify(_token(password="wrong"))) == "SCHED-AUTH"
    assert _code(lambda: _verify(_token(username="mallory"))) == "SCHED-AUTH"


@pytest.mark.parametrize("minutes", [-6, 6])
def test_verify_rejects_created_more_than_five_minutes_off(minutes: int) -> None:
    created = utc_stamp(NOW + dt.timedelta(minutes=minutes))
    assert _code(lambda: _verify(_token(created=created))) == "SCHED-AUTH"


def test_verify_accepts_created_within_the_window_and_offsets() -> None:
    _verify(_token(created=utc_stamp(NOW - dt.timedelta(minutes=4))))
    _verify(_token(created="2026-11-24T09:02:00.123-05:00"), NonceCache())


def test_verify_rejects_plain_text_and_missing_parts() -> None:
    assert _code(lambda: _verify(_token(password_type=PASSWORD_TEXT))) == "SCHED-AUTH"
    assert _code(lambda: _verify(_token(nonce=None))) == "SCHED-AUTH"
    assert _code(lambda: _verify(_token(nonce="not base64!"))) == "SCHED-AUTH"
    assert _code(lambda: _verify(_token(created="yesterday"))) == "SCHED-AUTH"


def test_nonce_cache_forgets_after_the_retention() -> None:
    nonces = NonceCache(retention=600)
    nonces.add("n", 1000.0)
    assert nonces.seen("n", 1500.0)
    assert not nonces.seen("n", 1601.0)
    assert len(nonces) == 0


def test_read_token_from_header_elements() -> None:
    header = etree.fromstring(security_header("bridge", "secret", created="2026-11-24T14:00:00Z"))
    token = read_token([header])
    assert (token.username, token.password_type, token.created) == (
        "bridge",
        PASSWORD_DIGEST,
        "2026-11-24T14:00:00Z",
    )
    assert _code(lambda: read_token(None)) == "SCHED-AUTH"
    assert _code(lambda: read_token([etree.Element("{urn:x}Other")])) == "SCHED-AUTH"
