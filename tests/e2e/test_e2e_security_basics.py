"""SMART discovery, HTTPS with TLS 1.2 at least, and CORS for browser apps."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.mock import MockHospital
from tests.support import Gateway, self_signed_certificate, start_gateway

pytestmark = pytest.mark.e2e


def test_smart_configuration_and_capability_security(tmp_path: Path, fhir: Any) -> None:
    with (
        MockHospital.start(patients=100) as mock,
        start_gateway(tmp_path, mock.ehr_url) as gw,
    ):
        smart = httpx.get(f"{gw.base}/.well-known/smart-configuration", timeout=10)
        cap = fhir(httpx.get(f"{gw.base}/metadata", timeout=10).json())
    assert smart.status_code == 200
    assert smart.headers["content-type"].startswith("application/json")
    config = smart.json()
    assert config["issuer"] == gw.issuer.issuer
    assert "permission-v2" in config["capabilities"]
    service = cap["rest"][0]["security"]["service"][0]["coding"][0]
    assert service["code"] == "SMART-on-FHIR"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_https_needs_tls_1_2_at_least(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with (
        MockHospital.start(patients=100) as mock,
        start_gateway(
            tmp_path,
            mock.ehr_url,
            extra={"tls": {"cert": str(cert), "key": str(key)}},
            scheme="https",
        ) as gw,
    ):
        modern = ssl.create_default_context(cafile=str(cert))
        reply = httpx.get(f"{gw.base}/metadata", verify=modern, timeout=10)
        assert reply.status_code == 200
        old = ssl.create_default_context(cafile=str(cert))
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{gw.base}/metadata", verify=old, timeout=10)


def test_cors_lets_configured_browser_origins_in(tmp_path: Path) -> None:
    with (
        MockHospital.start(patients=100) as mock,
        start_gateway(
            tmp_path, mock.ehr_url, extra={"cors_origins": ["https://app.example"]}
        ) as gw,
    ):
        preflight = httpx.options(
            f"{gw.base}/Patient",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization",
            },
            timeout=10,
        )
        other = httpx.get(
            f"{gw.base}/metadata", headers={"Origin": "https://evil.example"}, timeout=10
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


def test_gateway_fixture_still_plain_http(gateway: Gateway) -> None:
    assert gateway.base.startswith("http://")


def test_answers_do_not_name_the_server_software(gateway: Gateway) -> None:
    for reply in (
        gateway.client().get("/Patient/100001"),
        gateway.anonymous().get("/Patient/100001"),
        gateway.anonymous().get("/metadata"),
    ):
        assert "server" not in reply.headers, reply.headers
        assert reply.headers["date"]  # HTTP/1.1 origin servers still date their answers
