"""`bridge demo`: the mock hospital and the gateway, on embedded defaults.

It starts the mock hospital in a child process, a development token issuer in
memory (loopback only, never for real use) and the gateway, then prints what
a client needs: the FHIR base URL, tokens and requests that work.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bridge.auth.devissuer import DevIssuer, default_key_file

__all__ = ["run_demo", "start_mock"]

_ROOT = Path(__file__).resolve().parent.parent


def _mappings_root() -> Path:
    return Path("mappings") if Path("mappings").is_dir() else _ROOT / "mappings"


def _mappings() -> list[Path]:
    return sorted(p.parent for p in _mappings_root().glob("*/system.yaml"))


def start_mock(
    host: str, port: int, *extra: str, own_session: bool = False
) -> subprocess.Popen[str]:
    """Start `bridge mock` and wait until it says it is ready.

    `own_session`: out of the terminal's reach, so that Ctrl+C stops the caller
    alone, which stops the mock once it no longer needs it (after its logouts)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge.mock", "--host", host, "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=own_session,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "ready at" in line:
            return process
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(
        f"the mock hospital did not start on {host}:{port} (is the port free? "
        "does this Python have the mock extra?)"
    )


def _side_door(mock_url: str, path: str) -> Any:
    with urllib.request.urlopen(f"{mock_url}/_mock/{path}", timeout=10) as reply:  # noqa: S310 - loopback
        return json.loads(reply.read())


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, text in names.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


def _examples(base: str, mock_url: str) -> tuple[str, str]:
    """The sample patient and the requests of `mappings/demo-requests.yaml`, filled in."""
    from ruamel.yaml import YAML

    mrn = str(_side_door(mock_url, "patients?limit=1&offset=1")[0]["MRN"])
    provider = str(_side_door(mock_url, "scheduling/providers?limit=1")[0]["ProviderId"])
    today = datetime.date.fromisoformat(_side_door(mock_url, "info")["today"])
    thursday = today + datetime.timedelta(days=(3 - today.weekday()) % 7 or 7)
    names = {
        "base": base,
        "mrn": mrn,
        "provider": provider,
        "thursday": thursday.isoformat(),
        "friday": (thursday + datetime.timedelta(days=1)).isoformat(),
    }
    path = _mappings_root() / "demo-requests.yaml"
    groups = _fill(YAML(typ="safe").load(path.read_text(encoding="utf-8")), names)
    auth = '-H "Authorization: Bearer $TOKEN"'
    lines = []
    for group in groups:
        lines.append(group["title"])
        for request in group["requests"]:
            if isinstance(request, str):
                url = request.split(" ", 1)[1]
                lines.append(f'  curl -s {auth} "{url}"')
            else:
                body = json.dumps(request["body"], separators=(",", ":"))
                lines.append(
                    f"  curl -s {auth} -H 'Content-Type: application/fhir+json' -X POST "
                    f"{request['post']} -d '{body}'"
                )
    return mrn, "\n".join(lines)


def _forget_key(path: Path | None) -> None:
    """Remove the development issuer's key file if this demo wrote it."""
    if path is None:
        return
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _bridge_command() -> str:
    """`bridge` as the user's shell finds it: the command beside this interpreter (the
    venv's, which `make run` does not put on the PATH), relative to here if it can be."""
    command = Path(sys.executable).parent / "bridge"
    if not command.exists():
        return "bridge"
    try:
        return str(command.relative_to(Path.cwd()))
    except ValueError:
        return str(command)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_demo(*, host: str, port: int, mock_port: int) -> int:
    import uvicorn

    from bridge import busypoll
    from bridge.app import create_app
    from bridge.logs import configure_logging
    from bridge.server import HttpProtocol, client_address_options
    from bridge.settings import AdminSettings, AuthSettings, Settings, StoreSettings, SystemRef

    if not _is_loopback(host):
        print("bridge demo serves on loopback only (its token issuer is for development).")
        return 2
    mock = start_mock("127.0.0.1", mock_port, own_session=True)
    key_file: Path | None = None
    try:
        mock_url = f"http://127.0.0.1:{mock_port}"
        base = f"http://{host}:{port}/fhir"
        issuer = DevIssuer(issuer=f"http://{host}:{port}/dev-issuer", audience=base)
        # `bridge token` in another shell mints more tokens with this key.
        key_file = default_key_file()
        admin_token = secrets.token_urlsafe(24)
        issuer.save(key_file)
        settings = Settings(
            host=host,
            port=port,
            base_url=base,
            systems=[
                SystemRef(path=folder, endpoint=None, origin=mock_url) for folder in _mappings()
            ],
            paging_key=secrets.token_urlsafe(32),
            auth=AuthSettings(mode="jwt", issuer=issuer.issuer, jwks=issuer.jwks()),
            # A fresh store per demo: its audit trail, consents and revocations.
            store=StoreSettings(
                url=f"sqlite:///{tempfile.mkdtemp(prefix='bridge-demo-')}/store.db",
                poll_interval=1.0,
            ),
            admin=AdminSettings(token=admin_token),
        )
        configure_logging("warning")
        busypoll.configure(busypoll.window_for(settings.busy_poll, settings.workers))
        app = create_app(settings)
        mrn, examples = _examples(base, mock_url)
        clinician = issuer.mint(scope="user/*.*", client_id="demo-clinician-app")
        patient_app = issuer.mint(
            scope="launch/patient patient/*.read", client_id="demo-patient-app", patient=mrn
        )
        backend = issuer.mint(scope="system/*.read", client_id="demo-backend-service")
        print(
            f"""
FHIR base URL:  {base}
Mock hospital:  {mock_url}/ehr  (WSDL: {mock_url}/ehr?wsdl, stats: {mock_url}/_mock/stats)

!! DEVELOPMENT TOKEN ISSUER: loopback only, tokens valid 8 hours.          !!
!! Never use these tokens or this issuer outside this demo.                 !!
More tokens, from another shell, while the demo runs:
  {_bridge_command()} token --scope "patient/*.rs" --patient {mrn}

export BASE={base}

Clinician app token (user/*.*: read and write):
export TOKEN={clinician}

Patient app token (patient/*.read, patient {mrn}):
export PATIENT_TOKEN={patient_app}

Backend service token (system/*.read):
export SERVICE_TOKEN={backend}

Admin credential (POST /admin/revocations):
export ADMIN_TOKEN={admin_token}

Try:
  curl -s {base}/metadata
  curl -s -H "Authorization: Bearer $PATIENT_TOKEN" {base}/Patient/{mrn}
{examples}
  # The audit trail of the sample patient (every request above is in it)
  curl -s -H "Authorization: Bearer $TOKEN" "{base}/AuditEvent?patient={mrn}"

Press Ctrl+C to stop.
""",
            flush=True,
        )
        # uvicorn re-raises SIGTERM once it has shut down; exiting through
        # SystemExit lets the `finally` below stop the mock hospital too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        # A closed terminal hangs up the demo alone (the mock has its own session):
        # shut down as for SIGTERM, so that the mock is stopped too.
        signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            loop="uvloop",
            http=HttpProtocol,
            ws="none",  # as `bridge serve`: no WebSockets, no server header
            server_header=False,
            **client_address_options(settings.trusted_proxies),
        )
    finally:
        _forget_key(key_file)
        mock.terminate()
        try:
            mock.wait(timeout=10)
        except subprocess.TimeoutExpired:
            mock.kill()
    return 0
