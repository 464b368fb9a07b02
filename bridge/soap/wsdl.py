"""What a WSDL says, read once at start-up with zeep.

zeep is the authority on the WSDL: operations, SOAP version and action, and
the element tree of every request and response. The per-request path never
touches zeep; it uses the plain `OperationInfo` records built here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from bridge.errors import Problem

__all__ = ["ElementInfo", "OperationInfo", "ServiceDescription", "WsdlError", "load_wsdl"]

SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
_MAX_DEPTH = 12


@dataclass(frozen=True)
class ElementInfo:
    """One element of a message: its qualified name, cardinality and children."""

    name: str
    qname: str  # Clark notation: {namespace}local
    min_occurs: int
    max_occurs: int | None  # None: unbounded
    type_name: str
    children: tuple[ElementInfo, ...] = ()
    is_complex: bool = False

    @property
    def repeats(self) -> bool:
        return self.max_occurs is None or self.max_occurs > 1

    def child(self, name: str) -> ElementInfo | None:
        for c in self.children:
            if c.name == name:
                return c
        return None


@dataclass(frozen=True)
class OperationInfo:
    name: str
    soap_action: str
    soap_version: str  # "1.1" or "1.2"
    input: ElementInfo
    output: ElementInfo
    headers: tuple[ElementInfo, ...] = ()

    @property
    def envelope_ns(self) -> str:
        return SOAP12_ENV if self.soap_version == "1.2" else SOAP11_ENV


@dataclass
class ServiceDescription:
    path: Path
    operations: dict[str, OperationInfo] = field(default_factory=dict)
    elements: dict[str, ElementInfo] = field(default_factory=dict)
    address: str | None = None


class WsdlError(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


def _element(name: str, el: Any, depth: int) -> ElementInfo:
    qname = el.qname.text if el.qname is not None else name
    max_occurs = el.max_occurs
    typ = el.type
    children: tuple[ElementInfo, ...] = ()
    is_complex = hasattr(typ, "elements") and hasattr(typ, "attributes")
    if is_complex and depth < _MAX_DEPTH:
        children = tuple(_element(n, e, depth + 1) for n, e in typ.elements)
    type_name = getattr(getattr(typ, "qname", None), "localname", None) or type(typ).__name__
    return ElementInfo(
        name=name,
        qname=qname,
        min_occurs=int(el.min_occurs),
        max_occurs=None if max_occurs == "unbounded" else int(max_occurs),
        type_name=str(type_name),
        children=children,
        is_complex=is_complex,
    )


def load_wsdl(path: Path, display: str | None = None) -> ServiceDescription:
    """Read a WSDL from a local file. Raises WsdlError naming the file on failure."""
    import zeep  # imported here: start-up cost only for processes that load WSDLs
    from zeep.exceptions import Error as ZeepError
    from zeep.wsdl import Document

    shown = display or str(path)
    if not path.is_file():
        raise WsdlError(Problem(shown, 1, 1, "WSDL file not found"))
    try:
        settings = zeep.Settings(strict=False, forbid_dtd=True)
        doc = Document(str(path), zeep.Transport(), settings=settings)  # type: ignore[no-untyped-call, arg-type]
    except (ZeepError, OSError, ValueError) as exc:
        raise WsdlError(Problem(shown, 1, 1, f"cannot read WSDL: {exc}")) from exc

    desc = ServiceDescription(path=path)
    for service in doc.services.values():
        for port in service.ports.values():
            binding = port.binding
            version = "1.2" if type(binding).__name__.startswith("Soap12") else "1.1"
            desc.address = desc.address or port.binding_options.get("address")
            for name, op in binding._operations.items():
                if name in desc.operations or op.input.body is None or op.output.body is None:
                    continue
                headers: tuple[ElementInfo, ...] = ()
                if op.input.header is not None:
                    headers = tuple(_element(n, e, 0) for n, e in op.input.header.type.elements)
                desc.operations[name] = OperationInfo(
                    name=name,
                    soap_action=op.soapaction or "",
                    soap_version=version,
                    input=_element(name, op.input.body, 0),
                    output=_element(op.output.body.name, op.output.body, 0),
                    headers=headers,
                )
    for el in doc.types.elements:
        if not hasattr(el, "max_occurs"):
            continue  # zeep lists the XML Schema's own 'schema' element here
        local = etree.QName(el.qname).localname
        desc.elements.setdefault(local, _element(local, el, 0))
    return desc
