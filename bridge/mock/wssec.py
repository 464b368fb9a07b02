"""WS-Security UsernameToken (OASIS WSS 1.0) as the scheduling vendor checks it.

Every call carries, in a ``wsse:Security`` SOAP header::

    <wsse:UsernameToken>
      <wsse:Username>bridge</wsse:Username>
      <wsse:Password Type="...#PasswordDigest">Base64(SHA-1(nonce+created+password))</wsse:Password>
      <wsse:Nonce EncodingType="...#Base64Binary">Base64(16 random bytes)</wsse:Nonce>
      <wsu:Created>2026-11-24T14:03:07Z</wsu:Created>
    </wsse:UsernameToken>

The server recomputes the digest, refuses a ``Created`` more than five
minutes off its own clock, and refuses a nonce it has already accepted
within that window (a replay). Plain-text passwords are refused: this
vendor only speaks PasswordDigest. Pure functions plus a nonce cache, so
tests can drive them with a fake clock.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from bridge.mock.state import VendorError

__all__ = [
    "PASSWORD_DIGEST",
    "PASSWORD_TEXT",
    "WINDOW_SECONDS",
    "WSSE_NS",
    "WSU_NS",
    "NonceCache",
    "UsernameToken",
    "password_digest",
    "read_token",
    "verify",
]

WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
PASSWORD_DIGEST = _PROFILE + "#PasswordDigest"
PASSWORD_TEXT = _PROFILE + "#PasswordText"
WINDOW_SECONDS = 300.0

AUTH = "SCHED-AUTH"
REPLAY = "SCHED-REPLAY"


@dataclass(frozen=True, slots=True)
class UsernameToken:
    username: str
    password: str
    password_type: str
    nonce: str | None
    created: str | None


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """``Base64(SHA-1(nonce + created + password))``, the WSS 1.0 digest."""
    raw = hashlib.sha1(nonce + created.encode() + password.encode()).digest()  # noqa: S324 - WSS 1.0 mandates SHA-1
    return base64.b64encode(raw).decode()


def read_token(header_elements: Sequence[etree._Element] | None) -> UsernameToken:
    """The UsernameToken of a request's SOAP header elements, or SCHED-AUTH."""
    security = None
    for element in header_elements or ():
        if element.tag == f"{{{WSSE_NS}}}Security":
            security = element
            break
    if security is None:
        raise VendorError(AUTH, "Missing wsse:Security header with a UsernameToken")
    token = security.find(f"{{{WSSE_NS}}}UsernameToken")
    if token is None:
        raise VendorError(AUTH, "wsse:Security holds no wsse:UsernameToken")
    password = token.find(f"{{{WSSE_NS}}}Password")
    nonce = token.find(f"{{{WSSE_NS}}}Nonce")
    created = token.find(f"{{{WSU_NS}}}Created")
    if created is None:
        # Some stacks put Created in the wsse namespace; accept it as WSS 1.0 clients do.
        created = token.find(f"{{{WSSE_NS}}}Created")
    return UsernameToken(
        username=(token.findtext(f"{{{WSSE_NS}}}Username") or "").strip(),
        password=(password.text or "").strip() if password is not None else "",
        password_type=(password.get("Type") or PASSWORD_TEXT) if password is not None else "",
        nonce=(nonce.text or "").strip() if nonce is not None else None,
        created=(created.text or "").strip() if created is not None else None,
    )


class NonceCache:
    """Nonces accepted recently, so a replayed token is caught; not thread-safe."""

    def __init__(self, retention: float = 2 * WINDOW_SECONDS) -> None:
        # A nonce older than twice the window cannot come back with a fresh
        # Created (its Created is fixed inside the signed token), so forgetting
        # it then is safe and keeps the cache small.
        self._retention = retention
        self._seen: dict[str, float] = {}

    def seen(self, nonce: str, now: float) -> bool:
        self._purge(now)
        return nonce in self._seen

    def add(self, nonce: str, now: float) -> None:
        self._seen[nonce] = now

    def clear(self) -> None:
        self._seen.clear()

    def __len__(self) -> int:
        return len(self._seen)

    def _purge(self, now: float) -> None:
        stale = [n for n, t in self._seen.items() if now - t > self._retention]
        for nonce in stale:
            del self._seen[nonce]


def _parse_created(text: str) -> _dt.datetime:
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = _dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        # WSS says UTC; a bare timestamp is read as UTC, as most stacks do.
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment


def verify(
    token: UsernameToken,
    *,
    username: str,
    password: str,
    now: float,
    nonces: NonceCache,
    window: float = WINDOW_SECONDS,
) -> None:
    """Accept the token or raise SCHED-AUTH / SCHED-REPLAY; records the nonce.

    ``now`` is the server's wall clock (seconds since the epoch, UTC).
    """
    if token.password_type != PASSWORD_DIGEST:
        raise VendorError(AUTH, "Only PasswordDigest UsernameTokens are accepted")
    if not token.nonce or not token.created:
        raise VendorError(AUTH, "A PasswordDigest token needs wsse:Nonce and wsu:Created")
    try:
        nonce = base64.b64decode(token.nonce, validate=True)
    except (binascii.Error, ValueError):
        raise VendorError(AUTH, "wsse:Nonce is not Base64") from None
    try:
        created = _parse_created(token.created)
    except ValueError:
        raise VendorError(AUTH, f"wsu:Created '{token.created}' is not a timestamp") from None

    expected = password_digest(nonce, token.created, password)
    user_ok = secrets.compare_digest(token.username.encode(), username.encode())
    digest_ok = secrets.compare_digest(token.password.encode(), expected.encode())
    if not (user_ok and digest_ok):
        raise VendorError(AUTH, "Invalid username or password digest")
    skew = abs(created.timestamp() - now)
    if skew > window:
        raise VendorError(
            AUTH, f"wsu:Created is {skew:.0f} s from the server clock (allowed {window:.0f} s)"
        )
    if nonces.seen(token.nonce, now):
        raise VendorError(REPLAY, "This nonce was already used; every request needs a new one")
    nonces.add(token.nonce, now)
