"""Raw bytes to a real `bridge serve`: upgrade requests and malformed HTTP.

What uvicorn answers on its own (a WebSocket handshake, a request httptools
cannot parse) must still be an OperationOutcome, and must not put the URL, with
its patient id, in the gateway's log.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support import Gateway

pytestmark = pytest.mark.e2e

PATH = "/fhir/Patient/100001"
WEBSOCKET = (
    b"GET /fhir/Patient/100001?_marker=ws-upgrade-7f3a HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Connection: Upgrade\r\n"
    b"Upgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)


def _exchange(gateway: Gateway, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """`request` sent as is; the answer's status line, headers and body (read to EOF)."""
    address = urlsplit(gateway.base)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(request)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status.encode("latin-1"), headers, body


def _assert_no_url_logged(gateway: Gateway) -> None:
    logs = gateway.logs()
    assert PATH not in logs
    assert "ws-upgrade-7f3a" not in logs
    assert "WebSocket" not in logs


def test_a_websocket_upgrade_without_a_token_is_a_401_outcome(gateway: Gateway, fhir: Any) -> None:
    status, headers, body = _exchange(gateway, WEBSOCKET + b"\r\n")
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert headers["connection"] == "close"
    assert fhir(json.loads(body))["issue"][0]["code"] == "login"
    _assert_no_url_logged(gateway)


def test_a_websocket_upgrade_with_a_token_is_an_ordinary_read(gateway: Gateway, fhir: Any) -> None:
    token = f"Authorization: Bearer {gateway.token()}\r\n".encode()
    # A request the client pipelines after it is not read (uvicorn drops it): the
    # connection closes after the one answer, and the client does not wait for more.
    follow = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    status, headers, body = _exchange(gateway, WEBSOCKET + token + b"\r\n" + follow)
    assert status == b"HTTP/1.1 200 OK"
    assert headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert headers["connection"] == "close"
    assert fhir(json.loads(body))["id"] == "100001"
    _assert_no_url_logged(gateway)


MALFORMED = {
    "control-byte-in-a-header": (
        b"GET /fhir/Patient/100001 HTTP/1.1\r\nHost: x\r\nAccept: \x01\r\n\r\n"
    ),
    "unknown-method": b"FOO /fhir/Patient/100001 HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-ascii-path": b"GET /fhir/Patient/100001\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-ascii-query": b"GET /fhir/Patient/100001?x=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    "negative-content-length": (
        b"POST /fhir/Patient/100001 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
    ),
    "content-length-and-transfer-encoding": (
        b"POST /fhir/Patient/100001 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "http-9.9": b"GET /fhir/Patient/100001 HTTP/9.9\r\nHost: x\r\n\r\n",
    "not-http": b"NOT HTTP AT ALL /fhir/Patient/100001\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_http_is_a_400_outcome(gateway: Gateway, fhir: Any, request_bytes: bytes) -> None:
    status, headers, body = _exchange(gateway, request_bytes)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert "server" not in headers
    assert fhir(json.loads(body)) == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "structure",
                "diagnostics": "The request is not well-formed HTTP/1.1; it was not processed.",
            }
        ],
    }
    _assert_no_url_logged(gateway)
