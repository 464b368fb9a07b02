"""HTTPS to a legacy system: verified certificates, a hospital's own CA, client certificates.

A TLS proxy with a certificate from a private CA, which also requires a
client certificate from that CA, stands in front of the mock EHR.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.mock import MockHospital
from tests.security.loopback import RecordingProxy
from tests.support import copy_mappings, start_gateway

pytestmark = pytest.mark.e2e


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _issue(
    folder: Path, name: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca[0].subject if ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if ca is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            False,
        )
    cert = builder.sign(ca[1] if ca else key, hashes.SHA256())
    _write(folder / name, cert, key)
    return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    folder = tmp_path / "pki"
    folder.mkdir()
    ca = _issue(folder, "hospital-ca", None)
    _issue(folder, "ehr", ca)
    _issue(folder, "gateway", ca)
    _issue(folder / "..", "stranger-ca", None)
    return folder


@pytest.fixture
def https_ehr(mock_hospital: MockHospital, pki: Path) -> Iterator[str]:
    """The mock EHR behind HTTPS that wants a client certificate from the hospital's CA."""
    proxy = RecordingProxy(mock_hospital.url)
    with proxy.running():
        assert proxy.httpd is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(pki / "ehr.pem", pki / "ehr.key")
        context.load_verify_locations(pki / "hospital-ca.pem")
        context.verify_mode = ssl.CERT_REQUIRED
        proxy.httpd.socket = context.wrap_socket(proxy.httpd.socket, server_side=True)
        yield proxy.url.replace("http://", "https://")


def _read(tmp_path: Path, origin: str, tls: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    folder = copy_mappings(tmp_path)
    system: dict[str, Any] = {"path": str(folder), "origin": origin}
    if tls is not None:
        system["tls"] = tls
    with start_gateway(tmp_path, origin + "/ehr", extra={"systems": [system]}) as gateway:
        reply = gateway.client("user/Patient.rs").get("/Patient/100001")
        return reply.status_code, reply.json()


def test_a_client_certificate_and_the_hospitals_ca_get_through(
    tmp_path: Path, https_ehr: str, pki: Path
) -> None:
    tls = {
        "ca_file": str(pki / "hospital-ca.pem"),
        "cert": str(pki / "gateway.pem"),
        "key": str(pki / "gateway.key"),
    }
    status, body = _read(tmp_path, https_ehr, tls)
    assert status == 200, body
    assert body["id"] == "100001"


@pytest.mark.parametrize(
    "tls",
    [
        None,  # the system's trust store does not know the hospital's CA
        {"ca_file": "../stranger-ca.pem"},  # another CA
        {"ca_file": "hospital-ca.pem"},  # trusted, but no client certificate
    ],
)
def test_an_unverified_or_unauthenticated_connection_is_refused(
    tmp_path: Path, https_ehr: str, pki: Path, tls: dict[str, str] | None
) -> None:
    if tls is not None:
        tls = {k: str((pki / v).resolve()) for k, v in tls.items()}
    status, body = _read(tmp_path, https_ehr, tls)
    assert status in (502, 503), body
    assert body["resourceType"] == "OperationOutcome"
