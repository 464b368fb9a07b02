"""A tiny SOAP client for the mock EHR tests: envelopes as strings, replies via lxml.

Deliberately not zeep and not the gateway's client: these tests pin the
wire format itself, so they build and read the XML by hand. The other
systems' clients are in ``clients.py``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from xml.sax.saxutils import escape

import httpx
import pytest
from lxml import etree

from bridge.mock import MockHospital
from tests.mock.clients import BILL, LAB, RX, SCHED, SoapClient, security_header

TNS = "urn:hospital:ehr"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
NS = {"e": TNS, "s": SOAP_ENV}


def envelope(operation: str, body: str = "", session_id: str | None = None) -> str:
    """A SOAP 1.1 envelope; ``body`` is the already-escaped inner XML."""
    header = ""
    if session_id is not None:
        header = (
            f"<e:SessionHeader><e:SessionId>{escape(session_id)}</e:SessionId></e:SessionHeader>"
        )
    return (
        f'<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{SOAP_ENV}" xmlns:e="{TNS}">'
        f"<s:Header>{header}</s:Header>"
        f"<s:Body><e:{operation}>{body}</e:{operation}></s:Body></s:Envelope>"
    )


def fields(**values: str | None) -> str:
    """Child elements in the given order, text escaped, ``None`` left out."""
    return "".join(f"<e:{k}>{escape(v)}</e:{k}>" for k, v in values.items() if v is not None)


@dataclass
class Reply:
    status: int
    root: etree._Element

    @property
    def body(self) -> etree._Element:
        return self.root.find("s:Body", NS)[0]

    @property
    def fault_code(self) -> str | None:
        """The vendor code of a fault, ``None`` for a normal answer."""
        return self.root.findtext("s:Body/s:Fault/detail/e:VendorError/e:Code", namespaces=NS)

    def text(self, path: str) -> str | None:
        return self.body.findtext(path, namespaces=NS)


class EhrClient:
    """Posts envelopes to one mock EHR and parses the replies."""

    envelope = staticmethod(envelope)
    fields = staticmethod(fields)

    def __init__(self, hospital: MockHospital, http: httpx.Client) -> None:
        self.hospital = hospital
        self.http = http

    def post(self, xml: str | bytes, charset: str = "utf-8") -> Reply:
        data = xml.encode() if isinstance(xml, str) else xml
        response = self.http.post(
            self.hospital.ehr_url,
            content=data,
            headers={"Content-Type": f"text/xml; charset={charset}"},
        )
        return Reply(response.status_code, etree.fromstring(response.content))

    def call(self, operation: str, session_id: str | None = None, **values: str | None) -> Reply:
        return self.post(envelope(operation, fields(**values), session_id))

    def login(self) -> str:
        reply = self.call("Login", Username=self.hospital.username, Password=self.hospital.password)
        assert reply.status == 200, etree.tostring(reply.root)
        session_id = reply.text("e:SessionId")
        assert session_id
        return session_id

    def logout(self, session_id: str) -> Reply:
        return self.call("Logout", SessionId=session_id)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture
def ehr(mock_hospital: MockHospital, http: httpx.Client) -> EhrClient:
    """A SOAP client on the session's (freshly reset) mock hospital."""
    return EhrClient(mock_hospital, http)


@pytest.fixture
def ehr_for(http: httpx.Client) -> Callable[[MockHospital], EhrClient]:
    """Builds a SOAP client for a mock started inside the test."""
    return lambda hospital: EhrClient(hospital, http)


@pytest.fixture(scope="session")
def small_hospital() -> Iterator[MockHospital]:
    """500 patients, pages of 10, at most 2 sessions: searches span many pages."""
    with MockHospital.start(patients=500, page_size=10, max_sessions=2) as hospital:
        yield hospital


@pytest.fixture
def small(small_hospital: MockHospital, ehr_for: Callable[[MockHospital], EhrClient]) -> EhrClient:
    small_hospital.reset()
    return ehr_for(small_hospital)


# -- the other legacy systems --------------------------------------------------


@pytest.fixture
def lab(mock_hospital: MockHospital) -> Iterator[SoapClient]:
    """A lab client with its own cookie jar (one browser-like ASP.NET client)."""
    with httpx.Client(timeout=10) as jar:
        yield SoapClient(mock_hospital.lab_url, LAB, jar)


@pytest.fixture
def sched(mock_hospital: MockHospital, http: httpx.Client) -> SoapClient:
    return SoapClient(mock_hospital.scheduling_url, SCHED, http, soap12=True)


@pytest.fixture
def rx(mock_hospital: MockHospital, http: httpx.Client) -> SoapClient:
    return SoapClient(mock_hospital.pharmacy_url, RX, http)


@pytest.fixture
def bill(mock_hospital: MockHospital, http: httpx.Client) -> SoapClient:
    return SoapClient(mock_hospital.billing_url, BILL, http)


@pytest.fixture
def wsse(mock_hospital: MockHospital) -> Callable[..., str]:
    """A fresh, valid WS-Security header for the mock's account (keywords override)."""
    return lambda **kw: security_header(mock_hospital.username, mock_hospital.password, **kw)


@pytest.fixture(scope="session")
def today(mock_hospital_server: MockHospital) -> dt.date:
    """The session mock's reference date (it runs with the real date)."""
    return dt.date.fromisoformat(mock_hospital_server.info()["today"])
