"""Stateless paging tokens.

A `next` link carries everything needed to serve the next page: the resource
type, the search, the position and a hint about the legacy cursor. The token
is sealed with AES-GCM (authenticated encryption: tamper-proof like an HMAC,
and opaque, so search values, which may be patient data, are not readable in
URLs and proxy logs). Any replica with the same key serves it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bridge.errors import InvalidPageToken

__all__ = ["PageState", "PageTokens"]

_AAD = b"bridge-page-v1"


@dataclass(frozen=True)
class PageState:
    resource: str
    params: list[tuple[str, str]]  # the search, as canonical (name, value) pairs
    offset: int
    count: int
    hint: tuple[str, str, int] | None = None  # (session key, legacy cursor, its position)


class PageTokens:
    def __init__(self, key: bytes, ttl: int = 3600) -> None:
        # Derive a fixed-size AES key from a passphrase of any length.
        self._aead = AESGCM(hashlib.sha256(b"bridge paging\x00" + key).digest())
        self.ttl = ttl

    def seal(self, state: PageState, *, now: float | None = None) -> str:
        payload: dict[str, Any] = {
            "r": state.resource,
            "p": state.params,
            "o": state.offset,
            "c": state.count,
            "x": int((now if now is not None else time.time()) + self.ttl),
        }
        if state.hint is not None:
            payload["h"] = list(state.hint)
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, orjson.dumps(payload), _AAD)
        return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

    def open(self, token: str, *, now: float | None = None) -> PageState:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            if len(raw) < 29:
                raise ValueError("short")
            data = orjson.loads(self._aead.decrypt(raw[:12], raw[12:], _AAD))
            expires = int(data["x"])
            state = PageState(
                resource=str(data["r"]),
                params=[(str(k), str(v)) for k, v in data["p"]],
                offset=int(data["o"]),
                count=int(data["c"]),
                hint=(str(data["h"][0]), str(data["h"][1]), int(data["h"][2]))
                if data.get("h")
                else None,
            )
        except (InvalidTag, ValueError, KeyError, TypeError, IndexError, binascii.Error) as exc:
            raise InvalidPageToken() from exc
        if expires < (now if now is not None else time.time()):
            raise InvalidPageToken("The paging link has expired; repeat the search.")
        return state
