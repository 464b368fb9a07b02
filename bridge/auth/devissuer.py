"""A development token issuer for `bridge demo`: loopback only, never for real use.

It holds an EC key and mints SMART access tokens the gateway accepts because
the demo configures the gateway with this issuer's public key. While the demo
runs, the key sits in `~/.bridge/dev-issuer.json` (readable by its owner only)
so that `bridge token` in another shell can mint more tokens; the demo removes
the file when it stops.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

__all__ = ["DevIssuer", "default_key_file"]

_MARK = "bridge development issuer: loopback only, never for real use"


def default_key_file() -> Path:
    """Where `bridge demo` leaves its issuer's key for `bridge token`."""
    return Path.home() / ".bridge" / "dev-issuer.json"


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DevIssuer:
    def __init__(self, issuer: str, audience: str, *, key: ECKey | None = None) -> None:
        self.issuer = issuer
        self.audience = audience
        self._key = key or ECKey.generate_key(
            "P-256", parameters={"kid": f"dev-{secrets.token_hex(4)}", "alg": "ES256", "use": "sig"}
        )

    def save(self, path: Path) -> None:
        """Write the issuer (its private key included) for `bridge token`; owner-only."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {
            "warning": _MARK,
            "issuer": self.issuer,
            "audience": self.audience,
            "pid": os.getpid(),
            "key": self._key.as_dict(private=True),
        }
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out)
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> DevIssuer:
        """The issuer a running `bridge demo` saved; ValueError with the fix when there is none."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            issuer, audience = str(data["issuer"]), str(data["audience"])
            key = ECKey.import_key(data["key"])
        except FileNotFoundError:
            raise ValueError(
                f"{path}: no development issuer found; start `bridge demo` first"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a development issuer file ({exc})") from exc
        if data.get("warning") != _MARK or not (_loopback(issuer) and _loopback(audience)):
            raise ValueError(f"{path}: not a loopback development issuer")
        return cls(issuer, audience, key=key)

    def jwks(self) -> dict[str, Any]:
        return dict(KeySet([self._key]).as_dict(private=False))

    def mint(
        self,
        *,
        scope: str,
        client_id: str,
        patient: str | None = None,
        subject: str = "dev-user",
        lifetime: int = 8 * 3600,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_hex(8),
        }
        if patient:
            claims["patient"] = patient
        header = {"alg": "ES256", "kid": self._key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self._key)
