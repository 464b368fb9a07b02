"""Parsing legacy XML safely, and finding SOAP faults in it.

Answers from legacy systems are untrusted: no DTDs, no entity expansion, no
network access, no huge trees (libxml2 stops at a depth of 256), and a size
cap (the transport stops reading at the same cap; this one guards any other
transport).

`load_dtd=False` and `no_network=True` are not enough on their own: libxml2
still opens a DOCTYPE's external subset and external parameter entities from
the local file system (`file:///...`, relative paths). Every parse therefore
goes through a resolver that refuses to load anything, so a compromised
backend can make the gateway read no file and fetch no URL.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from bridge.errors import BackendError
from bridge.soap.transport import MAX_RESPONSE_BYTES
from bridge.soap.wsdl import SOAP11_ENV, SOAP12_ENV

__all__ = ["MAX_XML_BYTES", "SoapFault", "compile_local_path", "parse_envelope"]

MAX_XML_BYTES = MAX_RESPONSE_BYTES


class _ExternalResourceRefused(Exception):
    """Raised inside the parser when the document asks for any external resource."""


class _RefuseEverything(etree.Resolver):
    # lxml passes a third argument (the parser context) that its stubs leave out, and
    # None for an identifier the document does not give.
    def resolve(
        self, system_url: str | None, public_id: str | None, context: object = None
    ) -> None:
        raise _ExternalResourceRefused()


_ENVELOPE11 = f"{{{SOAP11_ENV}}}Envelope"
_ENVELOPE12 = f"{{{SOAP12_ENV}}}Envelope"
_BODY11 = f"{{{SOAP11_ENV}}}Body"
_BODY12 = f"{{{SOAP12_ENV}}}Body"

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_blank_text=False,
    collect_ids=False,
)
_PARSER.resolvers.add(_RefuseEverything())


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
    """`A/B/C` of local names (any prefix), `*` for any element.

    Raises ValueError naming a step that is no XML element name: it could never
    match, and would break out of the quoted name in the XPath."""
    steps = []
    for step in path.strip("/").split("/"):
        if step != "*":
            try:
                etree.QName(step)  # an NCName: no prefix, quote, space or '['
            except ValueError as exc:
                raise ValueError(
                    f"{step!r} is not an XML element name; give local names without a "
                    "prefix, separated by '/', or '*' for any element"
                ) from exc
        steps.append("*" if step == "*" else f"*[local-name()='{step}']")
    return FaultCodePath(etree.XPath("/".join(steps)))


def parse_envelope(
    data: bytes, operation: str, fault_code_path: FaultCodePath | None
) -> etree._Element:
    """Return the first element of the SOAP Body, or raise SoapFault / BackendError."""
    if len(data) > MAX_XML_BYTES:
        raise BackendError("The legacy system's answer is too large.")
    try:
        root = etree.fromstring(data, parser=_PARSER)
    except _ExternalResourceRefused:
        raise BackendError(
            "The legacy system's answer asked for an external DTD or entity, which is refused."
        ) from None
    except etree.XMLSyntaxError as exc:
        raise BackendError(
            "The legacy system answered with XML the gateway could not parse."
        ) from exc
    if root.getroottree().docinfo.doctype:  # type: ignore[union-attr]
        raise BackendError("The legacy system answered with a DTD, which is refused.")
    # Plain comparisons with the four Clark names: no QName objects, no ElementPath.
    tag = root.tag
    if tag == _ENVELOPE11:
        ns = SOAP11_ENV
    elif tag == _ENVELOPE12:
        ns = SOAP12_ENV
    else:
        raise BackendError("The legacy system did not answer with a SOAP envelope.")
    wanted = _BODY11 if ns == SOAP11_ENV else _BODY12
    body = None
    for child in root:
        if child.tag == wanted:
            body = child
            break
    # Comments and processing instructions are not the answer: skip them.
    first = None
    if body is not None:
        for c in body:
            if type(c.tag) is str:
                first = c
                break
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
