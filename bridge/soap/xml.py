"""Parsing legacy XML safely, and finding SOAP faults in it.

Answers from legacy systems are untrusted: no DTDs, no entity expansion, no
network access, no huge trees, and a size cap enforced by the transport.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from bridge.errors import BackendError
from bridge.soap.wsdl import SOAP11_ENV, SOAP12_ENV

__all__ = ["SoapFault", "compile_local_path", "parse_envelope"]

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_blank_text=False,
    collect_ids=False,
)


class SoapFault(Exception):
    """A SOAP Fault from a legacy system.

    Only the fault code and the vendor code are kept: the fault text of many
    legacy systems holds patient data, so it is never read into Python strings
    that could reach a log or a client.
    """

    def __init__(self, operation: str, fault_code: str, vendor_code: str | None) -> None:
        self.operation = operation
        self.fault_code = fault_code
        self.vendor_code = vendor_code
        super().__init__(f"{operation}: SOAP fault {fault_code} vendor code {vendor_code}")


@dataclass(frozen=True)
class FaultCodePath:
    """A path inside the Fault element, matched by local names (faults are rare)."""

    xpath: etree.XPath

    def find(self, fault: etree._Element) -> str | None:
        found = self.xpath(fault)
        if isinstance(found, list) and found:
            first = found[0]
            text = first.text if isinstance(first, etree._Element) else str(first)
            return text.strip() if text else None
        return None


def compile_local_path(path: str) -> FaultCodePath:
    steps = []
    for step in path.strip("/").split("/"):
        steps.append("*" if step == "*" else f"*[local-name()='{step}']")
    return FaultCodePath(etree.XPath("/".join(steps)))


def parse_envelope(
    data: bytes, operation: str, fault_code_path: FaultCodePath | None
) -> etree._Element:
    """Return the first element of the SOAP Body, or raise SoapFault / BackendError."""
    try:
        root = etree.fromstring(data, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise BackendError(
            "The legacy system answered with XML the gateway could not parse."
        ) from exc
    doctype = root.getroottree().docinfo.doctype  # type: ignore[union-attr]
    if doctype:
        raise BackendError("The legacy system answered with a DTD, which is refused.")
    ns = etree.QName(root).namespace
    if etree.QName(root).localname != "Envelope" or ns not in (SOAP11_ENV, SOAP12_ENV):
        raise BackendError("The legacy system did not answer with a SOAP envelope.")
    body = root.find(f"{{{ns}}}Body")
    # Comments and processing instructions are not the answer: skip them.
    first = next((c for c in body if isinstance(c.tag, str)), None) if body is not None else None
    if first is None:
        raise BackendError("The legacy system answered with an empty SOAP body.")
    if first.tag == f"{{{ns}}}Fault":
        if ns == SOAP12_ENV:
            code = first.findtext(f"{{{ns}}}Code/{{{ns}}}Value") or ""
        else:
            code = first.findtext("faultcode") or ""
        vendor = fault_code_path.find(first) if fault_code_path else None
        raise SoapFault(operation, code.strip(), vendor)
    return first
