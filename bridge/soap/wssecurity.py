"""WS-Security UsernameToken headers (OASIS WSS 1.0), fresh for every call.

    <wsse:Security>
      <wsu:Timestamp><wsu:Created/><wsu:Expires/></wsu:Timestamp>
      <wsse:UsernameToken>
        <wsse:Username/><wsse:Password Type="...#PasswordDigest"/>
        <wsse:Nonce EncodingType="...#Base64Binary"/><wsu:Created/>
      </wsse:UsernameToken>
    </wsse:Security>

PasswordDigest = Base64(SHA-1(nonce + created + password)), as the standard says.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bridge.soap.envelope import escape_text

__all__ = ["UsernameToken"]

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_USERNAME_PROFILE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
)
_MESSAGE_SECURITY = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0"
)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class UsernameToken:
    username: str
    password: str
    digest: bool = True
    nonce: bool = True
    timestamp: bool = True
    ttl: int = 300
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    random: Callable[[int], bytes] = os.urandom

    def header(self) -> str:
        now = self.clock()
        created = _stamp(now)
        parts = [f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}">']
        if self.timestamp:
            expires = _stamp(now + timedelta(seconds=self.ttl))
            parts.append(
                f"<wsu:Timestamp><wsu:Created>{created}</wsu:Created>"
                f"<wsu:Expires>{expires}</wsu:Expires></wsu:Timestamp>"
            )
        parts.append(
            f"<wsse:UsernameToken><wsse:Username>{escape_text(self.username)}</wsse:Username>"
        )
        nonce = self.random(16) if (self.nonce or self.digest) else b""
        if self.digest:
            digest = hashlib.sha1(nonce + created.encode() + self.password.encode()).digest()  # noqa: S324 - the standard's algorithm
            password = base64.b64encode(digest).decode()
            kind = f"{_USERNAME_PROFILE}#PasswordDigest"
        else:
            password = escape_text(self.password)
            kind = f"{_USERNAME_PROFILE}#PasswordText"
        parts.append(f'<wsse:Password Type="{kind}">{password}</wsse:Password>')
        if nonce:
            encoded = base64.b64encode(nonce).decode()
            encoding = f"{_MESSAGE_SECURITY}#Base64Binary"
            parts.append(f'<wsse:Nonce EncodingType="{encoding}">{encoded}</wsse:Nonce>')
        if self.timestamp or self.digest:
            parts.append(f"<wsu:Created>{created}</wsu:Created>")
        parts.append("</wsse:UsernameToken></wsse:Security>")
        return "".join(parts)
