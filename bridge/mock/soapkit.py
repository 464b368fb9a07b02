"""What every spyne service of the mock shares: faults, WSGI wrapping, WSDLs.

Each legacy system (``ehr``, ``lab``, ``scheduling``, ``pharmacy``,
``billing``) declares its types and operations in its own module and
hands its spyne ``Application`` factory to the helpers here:

* :func:`vendor_fault` renders a :class:`VendorError` as a SOAP 1.1 or 1.2
  Fault whose detail is ``<tns:VendorError><tns:Code/><tns:Message/>``;
* :class:`VendorWsgi` answers requests that never reach an operation
  (empty, undecodable, with a DTD, schema-invalid) with the system's own
  BAD-REQUEST code, and anything unexpected with its INTERNAL code;
* :func:`build_wsgi` binds the state, sleeps injected latency, applies
  injected write faults (see :data:`DROP_HEADER`);
* :func:`wsdl_document` / :func:`pretty_wsdl` give the WSDL as served and
  as checked in.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar, cast

from lxml import etree
from spyne import Fault, Unicode
from spyne import rpc as _spyne_rpc
from spyne.protocol import ProtocolBase
from spyne.protocol.soap import Soap12
from spyne.server.wsgi import WsgiApplication, WsgiMethodContext

from bridge.mock.state import SystemState, VendorError

__all__ = [
    "DROP_HEADER",
    "OPTIONAL",
    "REQUIRED",
    "VendorSoap12",
    "VendorWsgi",
    "WsgiApp",
    "build_wsgi",
    "operation",
    "pretty_wsdl",
    "rpc",
    "vendor_error_type",
    "vendor_fault",
    "wsdl_document",
]

_F = TypeVar("_F", bound=Callable[..., Any])
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

REQUIRED: dict[str, Any] = {"min_occurs": 1, "nillable": False}
OPTIONAL: dict[str, Any] = {"min_occurs": 0, "nillable": False}


def rpc(*args: Any, **kwargs: Any) -> Callable[[_F], _F]:
    """spyne's ``@rpc``, typed so the decorated methods stay visible to mypy."""
    return cast(Callable[[_F], _F], _spyne_rpc(*args, **kwargs))


def vendor_error_type(tns: str) -> type:
    """A ``VendorError{Code, Message}`` fault type in ``tns``, for ``_throws``.

    Declares the fault detail in the WSDL (``wsdl:fault`` on every operation).
    Never raised: spyne would put these fields straight under ``<Fault>``;
    :func:`vendor_fault` builds the ``<detail>`` content by hand instead.
    """

    class VendorErrorDetail(Fault):  # type: ignore[misc]
        __namespace__ = tns
        __type_name__ = "VendorError"
        _type_info: ClassVar[list[tuple[str, Any]]] = [
            ("Code", Unicode(**REQUIRED)),
            ("Message", Unicode(**REQUIRED)),
        ]

    return VendorErrorDetail


def vendor_fault(tns: str, error: VendorError) -> Any:
    """A spyne Fault carrying ``<tns:VendorError>`` as its detail."""
    # Passed as an element so spyne emits <detail><tns:VendorError>, not a
    # dict-shaped <detail><detail> or untyped children.
    vendor = etree.Element(f"{{{tns}}}VendorError", nsmap={"tns": tns})
    etree.SubElement(vendor, f"{{{tns}}}Code").text = error.code
    etree.SubElement(vendor, f"{{{tns}}}Message").text = error.message
    return Fault(
        faultcode="Server" if error.server else "Client",
        faultstring=error.message,
        detail=vendor,
    )


class VendorSoap12(Soap12):  # type: ignore[misc]
    """spyne's SOAP 1.2 protocol, taught to send an element as the Fault's Detail.

    spyne 2.14 only accepts a dict there (and would wrap it untyped); the
    vendors here send a typed ``VendorError`` element, as under SOAP 1.1.
    An empty ``Role`` is dropped: SOAP 1.2 says it must be a URI if present.
    """

    def fault_to_parent(
        self, ctx: Any, cls: Any, inst: Any, parent: Any, ns: Any, **kw: Any
    ) -> Any:
        detail = inst.detail
        if not isinstance(detail, etree._Element):
            return super().fault_to_parent(ctx, cls, inst, parent, ns, **kw)
        inst.detail = None
        try:
            result = super().fault_to_parent(ctx, cls, inst, parent, ns, **kw)
        finally:
            inst.detail = detail
        fault = parent[-1]
        role = fault.find(f"{{{self.ns_soap_env}}}Role")
        if role is not None and not (role.text or "").strip():
            fault.remove(role)
        etree.SubElement(fault, f"{{{self.ns_soap_env}}}Detail").append(detail)
        return result


@contextmanager
def operation(
    state: SystemState, tns: str, name: str, *, injectable: bool = True
) -> Iterator[None]:
    """Count the call, maybe inject a fault, and render VendorError as a SOAP fault."""
    try:
        state.begin_call(name, injectable=injectable)
        yield
    except VendorError as error:
        state.record_fault(error.code)
        raise vendor_fault(tns, error) from None


def quiet_spyne() -> None:
    # spyne logs every Fault (with a traceback) at ERROR; faults are the
    # mock's normal answers, and their messages may name patients.
    logging.getLogger("spyne").setLevel(logging.CRITICAL + 1)


_SCHEMA_MESSAGE = re.compile(r"SCHEMAV?_?\w*:\w+: (.*?)['\"]?$")


def _bad_request_message(error: Any) -> str:
    # lxml's validator message arrives as a bytes repr with file:line noise:
    # b"<string>:1:0:ERROR:SCHEMASV:SCHEMAV_ELEMENT_CONTENT: Element ...".
    text = str(getattr(error, "faultstring", "") or "")
    match = _SCHEMA_MESSAGE.search(text)
    if match is not None:
        return f"Request does not match the schema: {match.group(1)}"
    return text or "Malformed request"


class VendorWsgi(WsgiApplication):  # type: ignore[misc]
    """spyne's WSGI server, with malformed requests answered in vendor form.

    spyne rejects XML that fails schema validation before any of our code
    runs; a real system answers those with its own code, so we re-dress the
    fault as ``<bad_request>`` (or ``<internal>``) with a VendorError detail.
    """

    def __init__(self, app: Any, state: SystemState, *, tns: str, bad_request: str) -> None:
        super().__init__(app)
        self._state = state
        self._tns = tns
        self._bad_request = bad_request

    def generate_contexts(self, ctx: Any, in_string_charset: Any = None) -> Any:
        # spyne's own version (server/_base.py) with the checks it lacks: it
        # only turns Faults into answers, and an empty body (StopIteration,
        # which would hang the request in a2wsgi), an undecodable one, a DTD
        # or an envelope without an operation escape it as other exceptions.
        protocol = self.app.in_protocol
        try:
            try:
                protocol.create_in_document(ctx, in_string_charset)
            except StopIteration:
                raise Fault("Client", "Empty request body; expected a SOAP envelope") from None
            except (UnicodeError, LookupError) as exc:
                raise Fault("Client", f"Cannot decode the request body: {exc}") from None
            _check_envelope(ctx.in_document[0], protocol.ns_soap_env)
            try:
                protocol.decompose_incoming_envelope(ctx, ProtocolBase.REQUEST)
            except (KeyError, RecursionError):
                # spyne follows SOAP-encoding href="#id" links: a dangling
                # one is a KeyError, a cycle endless recursion.
                raise Fault("Client", "An href does not resolve to an element id") from None
            return protocol.generate_method_contexts(ctx)
        except Fault as fault:
            ctx.in_object = None
            ctx.in_error = ctx.out_error = fault
            ctx.fire_event("method_exception_object")
            return (ctx,)

    def handle_rpc(self, req_env: Any, start_response: Any) -> Any:
        # The last line of defence: an exception escaping spyne would be a
        # bare "Internal Server Error" page (or, for StopIteration, a request
        # that never ends). Answer the system's INTERNAL fault instead.
        started = False

        def tracking(*args: Any) -> Any:
            nonlocal started
            started = True
            return start_response(*args)

        try:
            return super().handle_rpc(req_env, tracking)
        except Exception:
            if started:
                raise
            ctx = WsgiMethodContext(self, req_env, self.app.out_protocol.mime_type)
            fault = Fault("Server", "Internal error")
            ctx.in_error = ctx.out_error = fault
            return self.handle_error(ctx, [], fault, start_response)

    def handle_error(self, p_ctx: Any, others: Any, error: Any, start_response: Any) -> Any:
        if not self._is_vendor_fault(error):
            vendor = VendorError(self._bad_request, _bad_request_message(error))
            if not str(getattr(error, "faultcode", "Client")).startswith("Client"):
                vendor = VendorError(self._state.internal_code, "Internal error", server=True)
            self._state.record_fault(vendor.code)
            error = vendor_fault(self._tns, vendor)
            p_ctx.out_error = error
        transport = p_ctx.transport
        if transport.req_env.get("REQUEST_METHOD") == "POST":
            code = transport.resp_code or p_ctx.out_protocol.fault_to_http_response_code(error)
            # spyne's 405 for a POST it cannot read (no Content-Type): a fault is a 500.
            transport.resp_code = "500 Internal Server Error" if code.startswith("405") else code
        return super().handle_error(p_ctx, others, error, start_response)

    def _is_vendor_fault(self, error: Any) -> bool:
        detail = getattr(error, "detail", None)
        return isinstance(detail, etree._Element) and detail.tag == f"{{{self._tns}}}VendorError"


def _check_envelope(root: Any, soap_env: str) -> None:
    """Client faults for what spyne's envelope parsing trips over."""
    # SOAP 1.1 (section 3) and 1.2 (part 1, 5) forbid a DTD. spyne leaves
    # entities unresolved (no XXE, no entity expansion), but lxml's schema
    # validator fails on the unresolved references with an internal error.
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise Fault("Client", "A SOAP message must not contain a document type declaration")
    if root.tag != f"{{{soap_env}}}Envelope":
        return  # spyne answers this one itself
    body = root.find(f"{{{soap_env}}}Body")
    if body is None or not any(isinstance(child.tag, str) for child in body):
        raise Fault("Client", "The SOAP Body holds no operation element")
    if body.find(f"{{{soap_env}}}Fault") is not None:
        raise Fault("Client", "A request's SOAP Body holds an operation, not a Fault")


_XS = "http://www.w3.org/2001/XMLSchema"
_SCHEMA_RANK = {f"{{{_XS}}}{k}": i for i, k in enumerate(("import", "simpleType", "complexType"))}


def _stable_schema(doc: Any) -> None:
    """Sort each xs:schema's children by kind, then name.

    spyne emits the types in an order that changes from one process to the
    next (it comes from a set); a WSDL that reorders itself on every start
    could never be checked in.
    """
    for schema in doc.root_elt.iter(f"{{{_XS}}}schema"):
        children = list(schema)
        children.sort(key=lambda e: (_SCHEMA_RANK.get(e.tag, 3), str(e.tag), e.get("name", "")))
        schema[:] = children


def _stabilise(wsdl: Any) -> None:
    wsdl.event_manager.add_listener("wsdl_document_built", _stable_schema)


# A WSGI answer carrying this header is never delivered: the ASGI layer
# (server.py) starts the response and then drops the connection, as a crashed
# or unplugged legacy server would.
DROP_HEADER = "X-Mock-Drop-Connection"
_OPERATION = re.compile(rb"<(?:[\w.-]+:)?Body\b[^>]*>\s*<(?:[\w.-]+:)?([\w.-]+)")


# The longest request body spyne takes (WsgiApplication's max_content_length default).
_MAX_BODY = 2 * 1024 * 1024


def _operation_of(environ: dict[str, Any]) -> str | None:
    """The SOAP operation a request calls (its first Body child); the body stays readable."""
    stream = environ["wsgi.input"]
    # No more than spyne would take (it refuses a longer body by its length).
    wanted = _MAX_BODY + 1
    declared = str(environ.get("CONTENT_LENGTH") or "")
    if declared.isdigit() and len(declared) < 10:
        wanted = min(int(declared), wanted)
    body = stream.read(wanted)
    environ["wsgi.input"] = io.BytesIO(body)
    match = _OPERATION.search(body)
    return match.group(1).decode() if match else None


def _faulty_write(
    soap: WsgiApp,
    environ: dict[str, Any],
    start_response: Callable[..., Any],
    mode: str,
    delay: float,
) -> Iterable[bytes]:
    """A write under an injected write fault (``POST /_mock/faults`` ``write_fault``)."""
    if mode == "drop-before-apply":
        start_response("200 OK", [("Content-Type", "text/xml"), (DROP_HEADER, "1")])
        return [b""]
    captured: list[Any] = []

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured[:] = [status, headers]
        return lambda data: None

    body = b"".join(soap(environ, capture))  # applied here
    status, headers = captured
    if mode == "apply-then-drop":
        start_response("200 OK", [("Content-Type", "text/xml"), (DROP_HEADER, "1")])
        return [b""]
    time.sleep(delay)  # apply-then-delay: the answer comes, too late
    start_response(status, headers)
    return [body]


def build_wsgi(application: Any, state: SystemState, *, tns: str, bad_request: str) -> WsgiApp:
    """A spyne ``Application`` as a WSGI app bound to ``state``; sleeps injected latency."""
    quiet_spyne()

    def attach_state(ctx: Any) -> None:
        ctx.udc = state

    application.event_manager.add_listener("method_call", attach_state)
    soap = VendorWsgi(application, state, tns=tns, bad_request=bad_request)
    _stabilise(soap.doc.wsdl11)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # Sleep in the worker thread, as a slow backend would: the event
        # loop and the side door stay responsive.
        delay = state.latency_seconds()
        if delay > 0 and environ.get("REQUEST_METHOD") == "POST":
            time.sleep(delay)
        if state.has_call_faults and environ.get("REQUEST_METHOD") == "POST":
            if state.drop_call():
                start_response("200 OK", [("Content-Type", "text/xml"), (DROP_HEADER, "1")])
                return [b""]
            hit = state.write_fault(_operation_of(environ) or "")
            if hit is not None:
                return _faulty_write(soap, environ, start_response, *hit)
        return cast(Iterable[bytes], soap(environ, start_response))

    return wsgi


def wsdl_document(application: Any, location: str) -> bytes:
    """The WSDL exactly as ``<path>?wsdl`` serves it, with ``location`` as address.

    Built through the same WSGI server class, because spyne takes the
    binding's transport URI from the server it is served by.
    """
    quiet_spyne()
    wsdl = WsgiApplication(application).doc.wsdl11
    _stabilise(wsdl)
    wsdl.build_interface_document(location)
    return cast(bytes, wsdl.get_interface_document())


def pretty_wsdl(document: bytes) -> bytes:
    """A WSDL as the checked-in copies store it: indented, with an XML declaration."""
    root = etree.fromstring(document)
    return etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8")
