"""Helpers for tests: FHIR conformance checks and a real gateway process."""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from fhir.resources.R4B import get_fhir_model_class

from bridge.auth.devissuer import DevIssuer

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).parent / "fhir_schema" / "fhir.schema.json.gz"
# The /admin/* credential of every gateway start_gateway() starts.
ADMIN_TOKEN = "test-admin-credential"


# -- FHIR conformance ---------------------------------------------------------


@functools.cache
def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    # The published R4 schema was generated before the 4.0.1 technical
    # correction and lists versions up to 4.0.0 only; R4 servers say 4.0.1.
    _add_version(loaded, "4.0.1")
    return loaded


def _add_version(node: Any, version: str) -> None:
    if isinstance(node, dict):
        enum = node.get("enum")
        if isinstance(enum, list) and "4.0.0" in enum and version not in enum:
            enum.append(version)
        for value in node.values():
            _add_version(value, version)
    elif isinstance(node, list):
        for value in node:
            _add_version(value, version)


@functools.cache
def _validator(resource_type: str) -> jsonschema.Draft6Validator:
    schema = _schema()
    if resource_type not in schema["definitions"]:
        raise AssertionError(f"{resource_type} is not a FHIR R4 resource type")
    return jsonschema.Draft6Validator(
        {"definitions": schema["definitions"], "$ref": f"#/definitions/{resource_type}"}
    )


def check_fhir(resource: dict[str, Any]) -> dict[str, Any]:
    """Assert `resource` is valid FHIR R4 (official JSON schema) and R4B (fhir.resources).

    Bundle entries are checked one by one against their own type (the schema's
    any-resource union is slow and its errors unreadable).
    """
    rtype = resource.get("resourceType")
    assert isinstance(rtype, str), f"no resourceType in {resource!r}"
    shallow = resource
    if rtype == "Bundle":
        shallow = {
            **resource,
            "entry": [
                {**e, "resource": {"resourceType": "Basic", "code": {"text": "checked below"}}}
                if "resource" in e
                else e
                for e in resource.get("entry", [])
            ],
        }
        if not shallow["entry"]:
            del shallow["entry"]
        for entry in resource.get("entry", []):
            if "resource" in entry:
                check_fhir(entry["resource"])
    errors = sorted(_validator(rtype).iter_errors(shallow), key=lambda e: list(e.path))
    assert not errors, f"{rtype} fails the FHIR R4 JSON schema: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5]
    )
    get_fhir_model_class(rtype).model_validate(resource)
    return resource


# -- processes -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost that is its own CA, and its key:
    (cert.pem, key.pem) in `folder`, for the HTTPS servers a test starts."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Gateway:
    """A `bridge serve` process and a way to get authorised clients for it."""

    base: str
    issuer: DevIssuer
    process: subprocess.Popen[bytes]
    log_path: Path
    clients: list[httpx.Client] = field(default_factory=list)

    def token(self, scope: str = "user/*.read", patient: str | None = None) -> str:
        return self.issuer.mint(scope=scope, client_id="test-app", patient=patient)

    def client(self, scope: str = "user/*.read", patient: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(scope, patient)}"}
        client = httpx.Client(base_url=self.base, headers=headers, timeout=30)
        self.clients.append(client)
        return client

    def anonymous(self) -> httpx.Client:
        client = httpx.Client(base_url=self.base, timeout=30)
        self.clients.append(client)
        return client

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def copy_mappings(tmp_path: Path, system: str = "hospital") -> Path:
    """A private copy of a system folder (for tests that edit mappings)."""
    target = tmp_path / "mappings" / system
    shutil.copytree(ROOT / "mappings" / system, target)
    text = (target / "system.yaml").read_text()
    wsdl = ROOT / "wsdl" / system
    (target / "system.yaml").write_text(
        text.replace(f"../../wsdl/{system}/", f"{wsdl.as_posix()}/")
    )
    return target


def conditional_scheduling(tmp_path: Path) -> Path:
    """A copy of the scheduling folder whose Appointment create takes If-None-Exist on
    `patient` (no shipped mapping declares `conditional`)."""
    folder = copy_mappings(tmp_path, "scheduling")
    mapping = folder / "Appointment.yaml"
    text = mapping.read_text()
    mapping.write_text(
        text.replace("  respond: answer\n", "  respond: answer\n  conditional: patient\n", 1)
    )
    return folder


@contextlib.contextmanager
def start_gateway(
    tmp_path: Path,
    ehr_url: str,
    *,
    paging_key: str | None = None,
    mappings: Path | None = None,
    extra: dict[str, Any] | None = None,
    issuer: DevIssuer | None = None,
    scheme: str = "http",
) -> Iterator[Gateway]:
    port = free_port()
    base = f"{scheme}://127.0.0.1:{port}/fhir"
    issuer = issuer or DevIssuer(issuer="https://issuer.test", audience=base)
    issuer.audience = base
    # Every system of the mock hospital listens on one origin, each at its path.
    origin = ehr_url.rsplit("/", 1)[0]
    folders = (
        [mappings]
        if mappings
        else sorted(p.parent for p in (ROOT / "mappings").glob("*/system.yaml"))
    )
    run_dir = tmp_path / f"gateway-{port}"
    run_dir.mkdir(parents=True)
    config = {
        "host": "127.0.0.1",
        "port": port,
        "base_url": base,
        "systems": [{"path": str(folder), "origin": origin} for folder in folders],
        "paging_key": paging_key or secrets.token_urlsafe(24),
        "auth": {"mode": "jwt", "issuer": issuer.issuer, "jwks": issuer.jwks()},
        "store": {"url": f"sqlite:///{run_dir / 'store.db'}"},
        "admin": {"token": ADMIN_TOKEN},
        **(extra or {}),
    }
    config_path = run_dir / "gateway.json.yaml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    log_path = run_dir / "gateway.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
    gateway = Gateway(base, issuer, process, log_path)
    deadline = time.monotonic() + 30
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the gateway exited at start:\n{gateway.logs()}")
            try:
                health = f"{scheme}://127.0.0.1:{port}/healthz"
                if httpx.get(health, timeout=1, verify=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start:\n{gateway.logs()}")
            time.sleep(0.05)
        yield gateway
    finally:
        gateway.stop()
