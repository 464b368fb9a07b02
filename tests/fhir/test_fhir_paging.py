"""PageTokens: sealed, opaque, tamper-proof and expiring paging tokens."""

from __future__ import annotations

import base64

import pytest

from bridge.errors import InvalidPageToken
from bridge.fhir.paging import PageState, PageTokens

KEY = b"a paging key shared by every replica"
NOW = 1_700_000_000.0

STATE = PageState(
    resource="Patient",
    params=[("family", "Smith"), ("gender", "female")],
    offset=40,
    count=20,
    hint=("a1b2c3d4-3", "CURSOR-77", 40),
)


def _decoded(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_page_token_round_trip_with_hint() -> None:
    tokens = PageTokens(KEY, ttl=60)

    opened = tokens.open(tokens.seal(STATE, now=NOW), now=NOW + 1)

    assert opened == STATE
    assert opened.hint == ("a1b2c3d4-3", "CURSOR-77", 40)
    assert opened.params == [("family", "Smith"), ("gender", "female")]


def test_page_token_round_trip_without_hint() -> None:
    tokens = PageTokens(KEY)
    state = PageState("Patient", [], offset=0, count=10)

    assert tokens.open(tokens.seal(state)) == state


def test_page_token_is_url_safe_and_unpadded() -> None:
    token = PageTokens(KEY).seal(STATE)

    assert token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_page_token_differs_each_time_for_the_same_state() -> None:
    tokens = PageTokens(KEY)

    assert tokens.seal(STATE, now=NOW) != tokens.seal(STATE, now=NOW)


def test_page_token_any_flipped_character_is_refused() -> None:
    tokens = PageTokens(KEY)
    token = tokens.seal(STATE, now=NOW)
    # The last character may only carry base64 padding bits, so it is left out.
    for i in range(len(token) - 1):
        flipped = "B" if token[i] == "A" else "A"
        tampered = token[:i] + flipped + token[i + 1 :]
        with pytest.raises(InvalidPageToken) as info:
            tokens.open(tampered, now=NOW)
        assert info.value.status == 400
        assert info.value.code == "invalid"


def test_page_token_sealed_with_another_key_is_refused() -> None:
    token = PageTokens(b"another replica's key").seal(STATE, now=NOW)

    with pytest.raises(InvalidPageToken) as info:
        PageTokens(KEY).open(token, now=NOW)

    assert info.value.status == 400
    assert info.value.diagnostics == InvalidPageToken.default_diagnostics


def test_page_token_expired_is_refused_with_the_expired_message() -> None:
    tokens = PageTokens(KEY, ttl=60)
    token = tokens.seal(STATE, now=NOW)

    assert tokens.open(token, now=NOW + 59) == STATE
    with pytest.raises(InvalidPageToken) as info:
        tokens.open(token, now=NOW + 61)

    assert info.value.status == 400
    assert info.value.diagnostics == "The paging link has expired; repeat the search."


def test_page_token_ttl_is_the_sealing_replicas() -> None:
    token = PageTokens(KEY, ttl=10).seal(STATE, now=NOW)

    with pytest.raises(InvalidPageToken, match="expired"):
        PageTokens(KEY, ttl=3600).open(token, now=NOW + 11)


def _malformed() -> list[str]:
    good = PageTokens(KEY).seal(STATE, now=NOW)
    return [
        "",
        "=",
        "==",
        "a",
        "ab",
        "abc",
        "!!!!",
        "....",
        "%%%%%%%%",
        " ",
        "\n",
        "A" * 16,
        "A" * 28,
        "A" * 38,
        "A" * 39,
        "A" * 40,
        "A" * 200,
        "_" * 64,
        "-" * 64,
        "+/+/" * 16,
        "a.b.c",
        "eyJhbGciOiJub25lIn0.eyJyIjoiUGF0aWVudCJ9.",
        "é" * 40,
        "\x00" * 40,
        "😀" * 20,
        good[:-5],
        good[:20],
        good + "A",
        good + "AAAA",
        good + "!",
        good[1:],
        good + "\n",
        "A" + good,
        good[::-1],
        good.upper(),
        "Z" * 100_000,
    ]


def test_page_token_malformed_strings_are_only_ever_invalid_page_token() -> None:
    tokens = PageTokens(KEY)
    problems: list[str] = []
    for bad in _malformed():
        try:
            tokens.open(bad, now=NOW)
        except InvalidPageToken:
            continue
        except Exception as exc:  # the failure this test looks for
            problems.append(f"{bad[:40]!r} raised {type(exc).__name__}")
        else:
            problems.append(f"{bad[:40]!r} was accepted")

    assert problems == []


def test_page_token_does_not_carry_search_values_in_readable_form() -> None:
    state = PageState("Patient", [("family", "Smith")], offset=0, count=20, hint=None)

    raw = _decoded(PageTokens(KEY).seal(state))

    assert b"Smith" not in raw
    assert b"family" not in raw
    assert b"Patient" not in raw


def test_page_token_does_not_carry_the_legacy_cursor_in_readable_form() -> None:
    raw = _decoded(PageTokens(KEY).seal(STATE))

    assert b"CURSOR-77" not in raw
    assert b"a1b2c3d4" not in raw
