"""Hand-built SOAP clients for the lab, scheduling, pharmacy and billing tests.

Like the EHR's client in ``conftest.py``: envelopes are plain strings and
replies are read with lxml, so the tests pin each vendor's wire format
rather than what a SOAP library makes of it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from xml.sax.saxutils import escape

import httpx
from lxml import etree

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
LAB = "http://labvendor.example/LabService/2009"
SCHED = "urn:sched-systems:scheduling:v3"
RX = "urn:rxvendor:pharmacy"
BILL = "urn:billing-sys:claims:2011"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)
BASE64 = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)


def fields(**values: object) -> str:
    """``<v:Name>value</v:Name>`` children in order; lists repeat, ``None`` is left out."""
    out = []
    for name, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                out.append(f"<v:{name}>{escape(str(item))}</v:{name}>")
    return "".join(out)


@dataclass
class Reply:
    status: int
    root: etree._Element
    headers: httpx.Headers
    env: str
    ns: str

    @property
    def body(self) -> etree._Element:
        return self.root.find(f"{{{self.env}}}Body")[0]

    @property
    def fault_code(self) -> str | None:
        """The VendorError code of a SOAP 1.1 or 1.2 fault, ``None`` otherwise."""
        detail = "detail" if self.env == SOAP11 else f"{{{SOAP12}}}Detail"
        return self.root.findtext(
            f"{{{self.env}}}Body/{{{self.env}}}Fault/{detail}/{{{self.ns}}}VendorError/"
            f"{{{self.ns}}}Code"
        )

    def text(self, path: str) -> str | None:
        """Text at ``path`` under the response element; ``v:`` is the vendor namespace."""
        return self.body.findtext(path, namespaces={"v": self.ns})

    def all(self, path: str) -> list[etree._Element]:
        return self.body.findall(path, namespaces={"v": self.ns})

    def records(self, path: str) -> list[dict[str, str | None]]:
        """Each element at ``path`` as {child local name: text}."""
        return [
            {etree.QName(child).localname: child.text for child in element}
            for element in self.all(path)
        ]


class SoapClient:
    """Posts envelopes for one vendor (namespace, SOAP version) to one URL."""

    def __init__(self, url: str, ns: str, http: httpx.Client, *, soap12: bool = False) -> None:
        self.url = url
        self.ns = ns
        self.http = http
        self.env = SOAP12 if soap12 else SOAP11

    def envelope(self, operation: str, body: str = "", header: str = "") -> str:
        return (
            f'<?xml version="1.0" encoding="utf-8"?>'
            f'<s:Envelope xmlns:s="{self.env}" xmlns:v="{self.ns}">'
            f"<s:Header>{header}</s:Header>"
            f"<s:Body><v:{operation}>{body}</v:{operation}></s:Body></s:Envelope>"
        )

    def post(self, xml: str) -> Reply:
        content_type = "application/soap+xml" if self.env == SOAP12 else "text/xml"
        response = self.http.post(
            self.url,
            content=xml.encode(),
            headers={"Content-Type": content_type + "; charset=utf-8"},
        )
        return Reply(
            response.status_code,
            etree.fromstring(response.content),
            response.headers,
            self.env,
            self.ns,
        )

    def call(self, operation: str, header: str = "", **values: object) -> Reply:
        return self.post(self.envelope(operation, fields(**values), header))


def utc_stamp(moment: dt.datetime | None = None) -> str:
    moment = moment or dt.datetime.now(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def security_header(
    username: str,
    password: str,
    *,
    created: str | None = None,
    nonce: bytes | None = None,
    digest: str | None = None,
) -> str:
    """A WSS 1.0 ``wsse:Security`` header with a PasswordDigest UsernameToken."""
    created = created or utc_stamp()
    nonce = nonce if nonce is not None else os.urandom(16)
    if digest is None:
        digest = base64.b64encode(
            hashlib.sha1(nonce + created.encode() + password.encode()).digest()
        ).decode()
    return (
        f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
        f"<wsse:Username>{escape(username)}</wsse:Username>"
        f'<wsse:Password Type="{DIGEST}">{digest}</wsse:Password>'
        f'<wsse:Nonce EncodingType="{BASE64}">{base64.b64encode(nonce).decode()}</wsse:Nonce>'
        f"<wsu:Created>{created}</wsu:Created>"
        f"</wsse:UsernameToken></wsse:Security>"
    )
