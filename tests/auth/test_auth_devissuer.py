"""The development issuer's key file and `bridge token`."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.auth.devissuer import DevIssuer, default_key_file
from bridge.auth.tokens import TokenVerifier
from bridge.cli import main

BASE = "http://127.0.0.1:8080/fhir"


def saved(tmp_path: Path) -> tuple[DevIssuer, Path]:
    issuer = DevIssuer("http://127.0.0.1:8080/dev-issuer", BASE)
    path = tmp_path / "dev-issuer.json"
    issuer.save(path)
    return issuer, path


def test_devissuer_key_file_is_owner_only_and_loads(tmp_path: Path) -> None:
    issuer, path = saved(tmp_path)

    loaded = DevIssuer.load(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert loaded.jwks() == issuer.jwks()
    assert (loaded.issuer, loaded.audience) == (issuer.issuer, BASE)


def test_devissuer_refuses_a_file_for_a_remote_issuer(tmp_path: Path) -> None:
    issuer = DevIssuer("https://login.example.org", "https://fhir.example.org/fhir")
    path = tmp_path / "remote.json"
    issuer.save(path)

    with pytest.raises(ValueError, match="not a loopback development issuer"):
        DevIssuer.load(path)


def test_bridge_token_prints_a_token_the_demo_gateway_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issuer, path = saved(tmp_path)
    code = main(
        [
            "token",
            "--scope",
            "patient/*.rs",
            "--patient",
            "100001",
            "--client-id",
            "my-app",
            "--lifetime",
            "120",
            "--issuer-file",
            str(path),
        ]
    )
    out = capsys.readouterr().out
    token = out.strip()
    verifier = TokenVerifier(
        issuer.jwks(), issuer=issuer.issuer, audience=BASE, algorithms=["ES256"], leeway=0
    )

    principal = asyncio.run(verifier.verify(token))

    assert code == 0
    assert out == token + "\n"  # the token only
    assert (principal.client_id, principal.patient) == ("my-app", "100001")


def test_bridge_token_without_a_running_demo_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["token", "--scope", "user/*.rs", "--issuer-file", str(tmp_path / "none.json")])

    assert code == 2
    assert "start `bridge demo` first" in capsys.readouterr().err


def test_bridge_token_refuses_a_scope_the_gateway_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = saved(tmp_path)

    code = main(["token", "--scope", "patient/observation.read", "--issuer-file", str(path)])

    assert code == 2
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("patient", ["100001,100002", "Patient/100002", "", "x" * 65])
def test_bridge_token_refuses_a_patient_that_is_no_fhir_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], patient: str
) -> None:
    _, path = saved(tmp_path)

    code = main(
        ["token", "--scope", "patient/*.rs", "--patient", patient, "--issuer-file", str(path)]
    )

    assert code == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert "--patient: a patient's FHIR id" in printed.err


def test_bridge_token_finds_the_demo_key_in_the_home_directory(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    issuer = DevIssuer("http://127.0.0.1:8080/dev-issuer", BASE)
    home_file = tmp_path / ".bridge" / "dev-issuer.json"
    issuer.save(home_file)

    result = subprocess.run(
        [sys.executable, "-m", "bridge", "token", "--scope", "system/*.rs"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    header = json.loads(
        __import__("base64").urlsafe_b64decode(result.stdout.split(".")[0] + "==").decode()
    )

    assert header["kid"] == issuer.jwks()["keys"][0]["kid"]
    assert default_key_file().name == "dev-issuer.json"
