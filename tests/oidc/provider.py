"""A real, independent OpenID provider (npm `oidc-provider`) on loopback, for tests.

`npm ci` installs it into tests/oidc/node_modules the first time; without
node and npm the tests that need it are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import KeySet, RSAKey

HERE = Path(__file__).resolve().parent


def _install() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the OpenID provider tests (tests/oidc)")
    if (HERE / "node_modules" / "oidc-provider").is_dir():
        return
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm ci in {HERE} failed:\n{result.stdout}\n{result.stderr}")


def signing_keys(kid: str) -> dict[str, Any]:
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"})
    return dict(KeySet([key]).as_dict(private=True))


class OidcProvider:
    """One `node server.js` process; `restart()` keeps the port (and issuer)."""

    def __init__(self, folder: Path, *, tls: tuple[Path, Path] | None = None) -> None:
        _install()
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.tls = tls
        self.port = 0
        self.issuer = ""
        self.process: subprocess.Popen[str] | None = None
        self.kid = ""
        self.generation = 0

    @property
    def verify(self) -> Any:
        return ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else True

    def start(self, port: int = 0) -> OidcProvider:
        self.generation += 1
        self.kid = f"oidc-key-{self.generation}"
        keys = self.folder / f"jwks-{self.generation}.json"
        keys.write_text(json.dumps(signing_keys(self.kid)))
        command = ["node", str(HERE / "server.js"), "--port", str(port), "--jwks", str(keys)]
        if self.tls:
            command += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        with (self.folder / f"provider-{self.generation}.log").open("w") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=HERE
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith("ready at "):
                self.issuer = line.removeprefix("ready at ").strip()
                self.port = int(self.issuer.rsplit(":", 1)[1])
                return self
            if not line and self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError(
            "the OpenID provider did not start: "
            + (self.folder / f"provider-{self.generation}.log").read_text()
        )

    def restart(self) -> None:
        """Stop and start again on the same port with new signing keys (a new kid)."""
        self.stop()
        self.start(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def token(
        self,
        client: str,
        scope: str,
        resource: str,
        *,
        patient: str | None = None,
        fhir_user: str | None = None,
    ) -> str:
        form = {"grant_type": "client_credentials", "scope": scope, "resource": resource}
        if patient:
            form["patient"] = patient
        if fhir_user:
            form["fhirUser"] = fhir_user
        reply = httpx.post(
            f"{self.issuer}/token",
            data=form,
            auth=(client, f"{client}-secret"),
            verify=self.verify,
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        token: str = reply.json()["access_token"]
        return token

    def revoke(self, client: str, token: str) -> None:
        reply = httpx.post(
            f"{self.issuer}/token/revocation",
            data={"token": token},
            auth=(client, f"{client}-secret"),
            verify=self.verify,
            timeout=10,
        )
        assert reply.status_code == 200, reply.text

    def stats(self) -> dict[str, int]:
        counts: dict[str, int] = httpx.get(
            f"{self.issuer}/_stats", verify=self.verify, timeout=10
        ).json()
        return counts

    def jwks(self) -> dict[str, Any]:
        keys: dict[str, Any] = httpx.get(
            f"{self.issuer}/jwks", verify=self.verify, timeout=10
        ).json()
        return keys


@contextlib.contextmanager
def running_provider(
    folder: Path, *, port: int = 0, tls: tuple[Path, Path] | None = None
) -> Iterator[OidcProvider]:
    provider = OidcProvider(folder, tls=tls)
    provider.start(port)
    try:
        yield provider
    finally:
        provider.stop()
