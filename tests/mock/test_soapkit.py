"""Hostile SOAP input: every system answers its own BAD-REQUEST fault, never hangs.

Each request goes to the session's real mock with a short client timeout:
a request the mock never answers fails the test instead of hanging it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from lxml import etree

from bridge.mock import MockHospital

WSDL = Path(__file__).resolve().parents[2] / "wsdl"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
XS = "http://www.w3.org/2001/XMLSchema"

# name -> (namespace, WSDL file, SOAP envelope namespace, bad-request code)
SYSTEMS = {
    "ehr": ("urn:hospital:ehr", "hospital/ehr.wsdl", SOAP11, "EHR-BAD-REQUEST"),
    "lab": ("http://labvendor.example/LabService/2009", "lab/lab.wsdl", SOAP11, "LAB-BAD-REQUEST"),
    "scheduling": (
        "urn:sched-systems:scheduling:v3",
        "scheduling/scheduling.wsdl",
        SOAP12,
        "SCHED-BAD-REQUEST",
    ),
    "pharmacy": ("urn:rxvendor:pharmacy", "pharmacy/pharmacy.wsdl", SOAP11, "RX-BAD-REQUEST"),
    "billing": ("urn:billing-sys:claims:2011", "billing/billing.wsdl", SOAP11, "BILL-BAD-REQUEST"),
}
# The first operation of each system, with its first request child.
FIRST_CALL = {
    "ehr": ("Login", "Username"),
    "lab": ("Logon", "UserName"),
    "scheduling": ("GetOpenSlots", "ProviderId"),
    "pharmacy": ("OpenSession", "User"),
    "billing": ("GetClaimStatus", "UserId"),
}


def _post(hospital: MockHospital, system: str, body: bytes) -> httpx.Response:
    env = SYSTEMS[system][2]
    content_type = "application/soap+xml" if env == SOAP12 else "text/xml"
    # A short timeout: the mock answers these in milliseconds or not at all.
    return httpx.post(
        hospital.system_url(system),
        content=body,
        headers={"Content-Type": content_type + "; charset=utf-8"},
        timeout=5,
    )


def _envelope(system: str, inner: str, prolog: str = "") -> bytes:
    ns, _, env, _ = SYSTEMS[system]
    return (
        f'{prolog}<s:Envelope xmlns:s="{env}" xmlns:v="{ns}"><s:Body>{inner}</s:Body></s:Envelope>'
    ).encode()


def _wsdl_schema(system: str) -> etree.XMLSchema:
    """The WSDL's xs:schema, compilable on its own (the WSDL root's prefixes copied)."""
    wsdl = etree.parse(str(WSDL / SYSTEMS[system][1]))
    schema = wsdl.find(f".//{{{XS}}}schema")
    assert schema is not None
    prefixes = {k: v for k, v in wsdl.getroot().nsmap.items() if k}
    standalone = etree.Element(schema.tag, dict(schema.attrib), nsmap=prefixes)
    standalone.extend(etree.fromstring(etree.tostring(child)) for child in schema)
    return etree.XMLSchema(standalone)


def _vendor_fault(system: str, response: httpx.Response) -> tuple[str, str]:
    """(Code, Message) of a well-formed SOAP fault whose detail the WSDL's schema accepts."""
    ns, _, env, _ = SYSTEMS[system]
    assert response.status_code == 500, response.text
    root = etree.fromstring(response.content)
    body = root.find(f"{{{env}}}Body")
    assert body is not None and len(body) == 1
    fault = body[0]
    assert fault.tag == f"{{{env}}}Fault"
    if env == SOAP11:
        assert response.headers["content-type"].startswith("text/xml")
        assert [child.tag for child in fault][:2] == ["faultcode", "faultstring"]
        assert fault.findtext("faultcode") == "soap11env:Client"
        detail = fault.find("detail")
    else:
        assert response.headers["content-type"].startswith("application/soap+xml")
        code = fault.findtext(f"{{{SOAP12}}}Code/{{{SOAP12}}}Value")
        assert code == "soap12env:Sender"
        detail = fault.find(f"{{{SOAP12}}}Detail")
    assert detail is not None and len(detail) == 1
    vendor = detail[0]
    schema = _wsdl_schema(system)
    assert schema.validate(vendor), schema.error_log
    assert vendor.tag == f"{{{ns}}}VendorError"
    return vendor.findtext(f"{{{ns}}}Code") or "", vendor.findtext(f"{{{ns}}}Message") or ""


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_empty_body_is_bad_request_not_a_hang(mock_hospital: MockHospital, system: str) -> None:
    code, message = _vendor_fault(system, _post(mock_hospital, system, b""))
    assert (code, message) == (
        SYSTEMS[system][3],
        "Empty request body; expected a SOAP envelope",
    )
    assert mock_hospital.stats()[system]["faults"] == {SYSTEMS[system][3]: 1}


@pytest.mark.parametrize("system", list(SYSTEMS))
@pytest.mark.parametrize(
    "prolog",
    [
        '<!DOCTYPE x [<!ENTITY a "DR1001">]>',
        '<!DOCTYPE x [<!ENTITY a SYSTEM "file:///etc/hostname">]>',
        '<!DOCTYPE x [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    ],
    ids=["internal-entity", "external-entity", "entity-expansion"],
)
def test_dtd_is_refused_as_bad_request(
    mock_hospital: MockHospital, system: str, prolog: str
) -> None:
    operation, child = FIRST_CALL[system]
    inner = f"<v:{operation}><v:{child}>&a;</v:{child}></v:{operation}>"
    response = _post(mock_hospital, system, _envelope(system, inner, prolog))
    assert _vendor_fault(system, response) == (
        SYSTEMS[system][3],
        "A SOAP message must not contain a document type declaration",
    )


def test_dtd_without_entity_references_is_refused_too(mock_hospital: MockHospital) -> None:
    body = _envelope(
        "ehr",
        "<v:Login><v:Username>bridge</v:Username><v:Password>x</v:Password></v:Login>",
        '<!DOCTYPE x [<!ENTITY a "unused">]>',
    )
    code, _ = _vendor_fault("ehr", _post(mock_hospital, "ehr", body))
    assert code == "EHR-BAD-REQUEST"
    assert mock_hospital.stats()["ehr"]["calls"] == {}


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_body_without_an_operation_is_bad_request(mock_hospital: MockHospital, system: str) -> None:
    for body in (_envelope(system, ""), _envelope(system, "<!-- nothing -->")):
        assert _vendor_fault(system, _post(mock_hospital, system, body)) == (
            SYSTEMS[system][3],
            "The SOAP Body holds no operation element",
        )
    env = SYSTEMS[system][2]
    header_only = f'<s:Envelope xmlns:s="{env}"><s:Header/></s:Envelope>'.encode()
    code, _ = _vendor_fault(system, _post(mock_hospital, system, header_only))
    assert code == SYSTEMS[system][3]


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_a_fault_sent_as_a_request_is_bad_request(mock_hospital: MockHospital, system: str) -> None:
    env = SYSTEMS[system][2]
    fault = f'<s:Fault xmlns:s="{env}"><faultcode>s:Client</faultcode></s:Fault>'
    body = _envelope(system, fault)
    assert _vendor_fault(system, _post(mock_hospital, system, body)) == (
        SYSTEMS[system][3],
        "A request's SOAP Body holds an operation, not a Fault",
    )


@pytest.mark.parametrize(
    "inner",
    [
        '<v:Login><v:Username id="u">bridge</v:Username><v:Password href="#nowhere"/></v:Login>',
        '<v:Login><v:Username id="u"><v:x href="#u"/></v:Username>'
        '<v:Password href="#u"/></v:Login>',
    ],
    ids=["dangling", "cycle"],
)
def test_unresolvable_href_is_bad_request(mock_hospital: MockHospital, inner: str) -> None:
    response = _post(mock_hospital, "ehr", _envelope("ehr", inner))
    assert _vendor_fault("ehr", response) == (
        "EHR-BAD-REQUEST",
        "An href does not resolve to an element id",
    )


def test_body_above_the_size_limit_is_bad_request(mock_hospital: MockHospital) -> None:
    padding = "x" * (3 * 1024 * 1024)
    inner = f"<v:Login><v:Username>{padding}</v:Username><v:Password>x</v:Password></v:Login>"
    response = _post(mock_hospital, "ehr", _envelope("ehr", inner))
    assert _vendor_fault("ehr", response) == ("EHR-BAD-REQUEST", "Request too long")


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_a_post_without_a_content_type_is_a_fault_with_http_500(
    mock_hospital: MockHospital, system: str
) -> None:
    # spyne answered 405; a SOAP fault is HTTP 500 (docs/mock.md), whatever went wrong.
    response = httpx.post(mock_hospital.system_url(system), content=b"<x/>", timeout=5)
    assert response.status_code == 500
    assert b"VendorError" in response.content


def test_a_write_fault_reads_no_more_of_a_body_than_spyne_takes(
    mock_hospital: MockHospital,
) -> None:
    # With a write fault armed the operation is peeked at before spyne runs: an
    # oversized body is still refused by its length, not read whole into memory.
    mock_hospital.inject_faults(system="ehr", write_fault="drop-before-apply")
    padding = "x" * (3 * 1024 * 1024)
    inner = f"<v:Login><v:Username>{padding}</v:Username><v:Password>x</v:Password></v:Login>"
    response = _post(mock_hospital, "ehr", _envelope("ehr", inner))
    assert _vendor_fault("ehr", response) == ("EHR-BAD-REQUEST", "Request too long")


def test_mock_keeps_answering_after_hostile_input(mock_hospital: MockHospital) -> None:
    for body in (b"", b"<s:Envelope", _envelope("ehr", "", '<!DOCTYPE x [<!ENTITY a "b">]>')):
        _post(mock_hospital, "ehr", body)
    login = _envelope(
        "ehr",
        f"<v:Login><v:Username>{mock_hospital.username}</v:Username>"
        f"<v:Password>{mock_hospital.password}</v:Password></v:Login>",
    )
    response = _post(mock_hospital, "ehr", login)
    assert response.status_code == 200
    assert b"SessionId" in response.content


# -- the last line of defence ---------------------------------------------------

# Run in a child process: importing spyne installs an import hook that makes
# later imports in this process warn (and pytest turns warnings into errors).
_BROKEN_MOCK = """
import datetime, io
from spyne.protocol.soap import Soap11
from bridge.mock import ehr
from bridge.mock.ehr_state import EhrState
from bridge.mock.options import MockOptions

def broken(self, ctx, message):
    raise RuntimeError("a bug in spyne or in the mock")

Soap11.decompose_incoming_envelope = broken
state = EhrState(MockOptions(patients=5, today=datetime.date(2026, 11, 24)))
app = ehr.build_wsgi_app(state)
body = BODY
statuses = []
environ = {
    "REQUEST_METHOD": "POST", "CONTENT_TYPE": "text/xml; charset=utf-8",
    "CONTENT_LENGTH": str(len(body)), "PATH_INFO": "/ehr", "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8081", "SERVER_PROTOCOL": "HTTP/1.1",
    "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
}
answer = b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
print(statuses[0])
print(state.stats()["faults"])
print(answer.decode())
"""


def test_unexpected_error_is_the_systems_internal_fault() -> None:
    body = _envelope("ehr", "<v:Logout><v:SessionId>x</v:SessionId></v:Logout>")
    script = _BROKEN_MOCK.replace("BODY", repr(body))
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    status, faults, answer = result.stdout.split("\n", 2)
    assert status.startswith("500")
    assert faults == "{'EHR-INTERNAL': 1}"
    root = etree.fromstring(answer.strip().encode())
    ns = {"s": SOAP11, "e": "urn:hospital:ehr"}
    assert root.findtext("s:Body/s:Fault/faultcode", namespaces=ns) == "soap11env:Server"
    assert root.findtext("s:Body/s:Fault/detail/e:VendorError/e:Code", namespaces=ns) == (
        "EHR-INTERNAL"
    )
    # Nothing was logged: the mock keeps spyne's tracebacks to itself.
    assert result.stderr == ""
