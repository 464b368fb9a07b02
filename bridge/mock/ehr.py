"""The mock EHR: a spyne SOAP 1.1 document/literal service at ``/ehr``.

The wire contract (names, order, fault shape) is what the gateway's
mapping files are written against; ``wsdl/hospital/ehr.wsdl`` is its
checked-in copy and a test keeps the two equal. All behaviour lives in
:class:`bridge.mock.state.EhrState`; this module only translates between
SOAP and that state.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar, cast

from lxml import etree
from spyne import Application, Array, ComplexModel, Fault, Integer, ServiceBase, Unicode
from spyne import rpc as _spyne_rpc
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

from bridge.mock.data import PatientRecord
from bridge.mock.state import EhrState, Page, SearchCriteria, VendorError

__all__ = ["TNS", "WsgiApp", "build_wsgi_app", "checked_in_wsdl", "wsdl_document"]

TNS = "urn:hospital:ehr"

_F = TypeVar("_F", bound=Callable[..., Any])
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _rpc(*args: Any, **kwargs: Any) -> Callable[[_F], _F]:
    # spyne is untyped; this keeps the decorated methods visible to mypy.
    return cast(Callable[[_F], _F], _spyne_rpc(*args, **kwargs))


_REQUIRED = {"min_occurs": 1, "nillable": False}
_OPTIONAL = {"min_occurs": 0, "nillable": False}


class SessionHeader(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [("SessionId", Unicode(**_REQUIRED))]


class Patient(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    # A list, not class attributes, so the element order is explicit.
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("MRN", Unicode(**_REQUIRED)),
        ("Name", Unicode(**_REQUIRED)),
        ("DOB", Unicode(**_REQUIRED)),
        ("Sex", Unicode(**_REQUIRED)),
        ("AddressLine1", Unicode(**_OPTIONAL)),
        ("AddressLine2", Unicode(**_OPTIONAL)),
        ("City", Unicode(**_OPTIONAL)),
        ("State", Unicode(**_OPTIONAL)),
        ("Zip", Unicode(**_OPTIONAL)),
        ("Phone", Unicode(**_OPTIONAL)),
        ("MaritalStatus", Unicode(**_OPTIONAL)),
        ("Language", Unicode(**_OPTIONAL)),
        ("DeceasedFlag", Unicode(**_REQUIRED)),
        ("DeceasedDate", Unicode(**_OPTIONAL)),
    ]


_PatientList = Array(Patient, **_OPTIONAL)
_PAGE_RETURNS = (_PatientList, Unicode(**_OPTIONAL), Integer(**_REQUIRED))
_PAGE_NAMES = ("Patients", "CursorId", "TotalCount")


class VendorErrorDetail(Fault):  # type: ignore[misc]
    """Declares the fault detail in the WSDL (``wsdl:fault`` on every operation).

    Never raised: spyne would put these fields straight under ``<Fault>``;
    :func:`_fault` builds the ``<detail>`` content by hand instead.
    """

    __namespace__ = TNS
    __type_name__ = "VendorError"
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("Code", Unicode(**_REQUIRED)),
        ("Message", Unicode(**_REQUIRED)),
    ]


def _patient(record: PatientRecord) -> Any:
    return Patient(**record.to_soap_dict())


def _page(page: Page) -> tuple[list[Any], str | None, int]:
    return [_patient(r) for r in page.records], page.cursor_id, page.total


def _fault(error: VendorError) -> Any:
    # Passed as an element so spyne emits <detail><tns:VendorError>, not a
    # dict-shaped <detail><detail> or untyped children.
    vendor = etree.Element(f"{{{TNS}}}VendorError", nsmap={"tns": TNS})
    etree.SubElement(vendor, f"{{{TNS}}}Code").text = error.code
    etree.SubElement(vendor, f"{{{TNS}}}Message").text = error.message
    return Fault(
        faultcode="Server" if error.server else "Client",
        faultstring=error.message,
        detail=vendor,
    )


def _ehr(ctx: Any) -> EhrState:
    return cast(EhrState, ctx.udc)


def _session_id(ctx: Any) -> str | None:
    header = ctx.in_header
    return None if header is None else cast("str | None", header.SessionId)


@contextmanager
def _operation(ctx: Any, name: str, *, injectable: bool = True) -> Iterator[EhrState]:
    """Count the call, maybe inject a fault, and render VendorError as SOAP."""
    ehr = _ehr(ctx)
    try:
        ehr.begin_call(name, injectable=injectable)
        yield ehr
    except VendorError as error:
        ehr.record_fault(error.code)
        raise _fault(error) from None


class EhrService(ServiceBase):  # type: ignore[misc]
    """The operations, in the order the WSDL lists them."""

    @_rpc(
        Unicode(**_REQUIRED),
        Unicode(**_REQUIRED),
        _returns=Unicode(**_REQUIRED),
        _out_variable_name="SessionId",
        _throws=VendorErrorDetail,
    )
    def Login(ctx: Any, Username: str, Password: str) -> str:
        with _operation(ctx, "Login", injectable=False) as ehr:
            return ehr.login(Username, Password)

    @_rpc(
        Unicode(**_REQUIRED),
        _returns=Unicode(**_REQUIRED),
        _out_variable_name="Result",
        _throws=VendorErrorDetail,
    )
    def Logout(ctx: Any, SessionId: str) -> str:
        with _operation(ctx, "Logout") as ehr:
            ehr.logout(SessionId)
            return "OK"

    @_rpc(
        Unicode(**_REQUIRED),
        _in_header=(SessionHeader,),
        _returns=Patient.customize(**_REQUIRED),
        _out_variable_name="Patient",
        _throws=VendorErrorDetail,
    )
    def GetPatient(ctx: Any, MRN: str) -> Any:
        with _operation(ctx, "GetPatient") as ehr:
            return _patient(ehr.get_patient(_session_id(ctx), MRN))

    @_rpc(
        Unicode(**_OPTIONAL),
        Unicode(**_OPTIONAL),
        Unicode(**_OPTIONAL),
        Unicode(**_OPTIONAL),
        Unicode(**_OPTIONAL),
        _in_header=(SessionHeader,),
        _returns=_PAGE_RETURNS,
        _out_variable_names=_PAGE_NAMES,
        _throws=VendorErrorDetail,
    )
    def FindPatients(
        ctx: Any,
        LastName: str | None,
        FirstName: str | None,
        DOB: str | None,
        Sex: str | None,
        MRN: str | None,
    ) -> tuple[list[Any], str | None, int]:
        with _operation(ctx, "FindPatients") as ehr:
            criteria = SearchCriteria(
                last_name=LastName, first_name=FirstName, dob=DOB, sex=Sex, mrn=MRN
            )
            return _page(ehr.find_patients(_session_id(ctx), criteria))

    @_rpc(
        Unicode(**_REQUIRED),
        _in_header=(SessionHeader,),
        _returns=_PAGE_RETURNS,
        _out_variable_names=_PAGE_NAMES,
        _throws=VendorErrorDetail,
    )
    def FetchNext(ctx: Any, CursorId: str) -> tuple[list[Any], str | None, int]:
        with _operation(ctx, "FetchNext") as ehr:
            return _page(ehr.fetch_next(_session_id(ctx), CursorId))


def _application() -> Any:
    return Application(
        [EhrService],
        tns=TNS,
        name="EhrService",
        in_protocol=Soap11(validator="lxml"),
        out_protocol=Soap11(),
    )


def _quiet_spyne() -> None:
    # spyne logs every Fault (with a traceback) at ERROR; faults are the
    # mock's normal answers, and their messages may name patients.
    logging.getLogger("spyne").setLevel(logging.CRITICAL + 1)


class _EhrWsgi(WsgiApplication):  # type: ignore[misc]
    """spyne's WSGI server, with malformed requests answered in vendor form.

    spyne rejects XML that fails schema validation before any of our code
    runs; a real EHR answers those with its own code, so we re-dress the
    fault as EHR-BAD-REQUEST with a VendorError detail.
    """

    def __init__(self, app: Any, ehr: EhrState) -> None:
        super().__init__(app)
        self._ehr = ehr

    def generate_contexts(self, ctx: Any, in_string_charset: Any = None) -> Any:
        # spyne only turns Faults into answers here; a body that does not
        # decode with its declared charset would escape as a bare HTTP 500.
        try:
            return super().generate_contexts(ctx, in_string_charset)
        except (UnicodeError, LookupError) as exc:
            fault = Fault("Client", f"Cannot decode the request body: {exc}")
            ctx.in_object = None
            ctx.in_error = ctx.out_error = fault
            return (ctx,)

    def handle_error(self, p_ctx: Any, others: Any, error: Any, start_response: Any) -> Any:
        if not _is_vendor_fault(error):
            vendor = VendorError("EHR-BAD-REQUEST", _bad_request_message(error))
            if not str(getattr(error, "faultcode", "Client")).startswith("Client"):
                vendor = VendorError("EHR-INTERNAL", "Internal error", server=True)
            self._ehr.record_fault(vendor.code)
            error = _fault(vendor)
            p_ctx.out_error = error
        return super().handle_error(p_ctx, others, error, start_response)


_SCHEMA_MESSAGE = re.compile(r"SCHEMAV?_?\w*:\w+: (.*?)['\"]?$")


def _bad_request_message(error: Any) -> str:
    # lxml's validator message arrives as a bytes repr with file:line noise:
    # b"<string>:1:0:ERROR:SCHEMASV:SCHEMAV_ELEMENT_CONTENT: Element ...".
    text = str(getattr(error, "faultstring", "") or "")
    match = _SCHEMA_MESSAGE.search(text)
    if match is not None:
        return f"Request does not match the schema: {match.group(1)}"
    return text or "Malformed request"


def _is_vendor_fault(error: Any) -> bool:
    detail = getattr(error, "detail", None)
    return isinstance(detail, etree._Element) and detail.tag == f"{{{TNS}}}VendorError"


def build_wsgi_app(ehr: EhrState) -> WsgiApp:
    """The EHR as a WSGI app bound to ``ehr``; latency is slept per call here."""
    _quiet_spyne()
    application = _application()

    def attach_state(ctx: Any) -> None:
        ctx.udc = ehr

    application.event_manager.add_listener("method_call", attach_state)
    soap = _EhrWsgi(application, ehr)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # Sleep in the worker thread, as a slow backend would: the event
        # loop and the side door stay responsive.
        delay = ehr.latency_seconds()
        if delay > 0 and environ.get("REQUEST_METHOD") == "POST":
            time.sleep(delay)
        return cast(Iterable[bytes], soap(environ, start_response))

    return wsgi


def wsdl_document(location: str) -> bytes:
    """The WSDL exactly as ``/ehr?wsdl`` serves it, with ``location`` as address.

    Built through the same WSGI server class, because spyne takes the
    binding's transport URI from the server it is served by.
    """
    _quiet_spyne()
    wsdl = WsgiApplication(_application()).doc.wsdl11
    wsdl.build_interface_document(location)
    return cast(bytes, wsdl.get_interface_document())


# Where the checked-in copy says the service lives: the documented dev port.
CHECKED_IN_LOCATION = "http://127.0.0.1:8081/ehr"


def checked_in_wsdl() -> bytes:
    """The WSDL as ``wsdl/hospital/ehr.wsdl`` stores it: pretty, fixed address."""
    root = etree.fromstring(wsdl_document(CHECKED_IN_LOCATION))
    return etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8")
