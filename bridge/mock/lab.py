"""The mock lab: an ASP.NET-style SOAP 1.1 service at ``/lab``.

This vendor never faults for business errors. Every response starts with
``Status`` (``OK``/``ERR``), ``Message`` and ``ErrorCode`` (empty when OK)
and only then carries its payload; a missing or expired session is a
normal 200 answer with ``ErrorCode`` ``LAB-SESSION``. ``Logon`` sets an
``ASP.NET_SessionId`` cookie that every later call must send back.
(Only XML that cannot reach an operation at all, e.g. one failing the
schema, is answered with a SOAP Fault, as ASP.NET itself does.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, cast

from spyne import Application, Array, Boolean, ComplexModel, Integer, ServiceBase, Unicode
from spyne.protocol.soap import Soap11

from bridge.mock.lab_state import LabState
from bridge.mock.labdata import LabReport as ReportRecord
from bridge.mock.soapkit import (
    OPTIONAL,
    REQUIRED,
    WsgiApp,
    build_wsgi,
    pretty_wsdl,
    rpc,
    vendor_error_type,
)
from bridge.mock.soapkit import wsdl_document as _wsdl_document
from bridge.mock.state import VendorError

__all__ = [
    "CHECKED_IN_LOCATION",
    "COOKIE",
    "TNS",
    "build_wsgi_app",
    "checked_in_wsdl",
    "wsdl_document",
]

TNS = "http://labvendor.example/LabService/2009"
# What a request that fails the schema is answered with (its errors are in-body).
VendorErrorDetail = vendor_error_type(TNS)
COOKIE = "ASP.NET_SessionId"

# ASP.NET makes every element optional; so does this vendor.
_STR = Unicode(**OPTIONAL)
_INT = Integer(**OPTIONAL)


class LabResult(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("AccessionNumber", _STR),
        ("TestCode", _STR),
        ("TestName", _STR),
        ("Value", _STR),
        ("Units", _STR),
        ("RefLow", _STR),
        ("RefHigh", _STR),
        ("Flag", _STR),
        ("ResultStatus", _STR),
        ("CollectedAt", _STR),
        ("ResultedAt", _STR),
    ]


_Results = Array(LabResult, **OPTIONAL)


class LabReport(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("AccessionNumber", _STR),
        ("MRN", _STR),
        ("OrderedBy", _STR),
        ("Status", _STR),
        ("CollectedAt", _STR),
        ("ReportedAt", _STR),
        ("Results", _Results),
    ]


_STATUS = (Unicode(**REQUIRED), Unicode(**REQUIRED), Unicode(**REQUIRED))
_STATUS_NAMES = ("Status", "Message", "ErrorCode")
_OK = ("OK", "", "")


def _lab(ctx: Any) -> LabState:
    return cast(LabState, ctx.udc)


def _cookie(ctx: Any) -> str | None:
    """The ``ASP.NET_SessionId`` the client sent, if any."""
    header = ctx.transport.req_env.get("HTTP_COOKIE") or ""
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def _call(ctx: Any, name: str, padding: int, body: Callable[[LabState], tuple[Any, ...]]) -> Any:
    """Run one operation; any VendorError becomes ``Status=ERR`` in the response.

    ``padding`` is how many payload values follow the status triple, all
    left out (``None``) in an error answer.
    """
    lab = _lab(ctx)
    try:
        lab.begin_call(name, injectable=name != "Logon")
        return (*_OK, *body(lab))
    except VendorError as error:
        # The lab reports errors in the body, but they are its faults all the same.
        lab.record_fault(error.code)
        return ("ERR", error.message, error.code, *([None] * padding))


def _report(record: ReportRecord) -> Any:
    return LabReport(
        AccessionNumber=record.accession,
        MRN=record.mrn,
        OrderedBy=record.ordered_by,
        Status=record.status,
        CollectedAt=record.collected_at,
        ReportedAt=record.reported_at,
        Results=[LabResult(**r._asdict()) for r in record.results],
    )


class LabService(ServiceBase):  # type: ignore[misc]
    @rpc(
        _STR,
        _STR,
        _returns=(*_STATUS, Boolean(**REQUIRED)),
        _out_variable_names=(*_STATUS_NAMES, "LogonResult"),
        _throws=VendorErrorDetail,
    )
    def Logon(ctx: Any, UserName: str | None, Password: str | None) -> Any:
        def body(lab: LabState) -> tuple[Any, ...]:
            session_id = lab.logon(UserName, Password)
            ctx.transport.resp_headers["Set-Cookie"] = f"{COOKIE}={session_id}; path=/; HttpOnly"
            return (True,)

        status, message, code, result = _call(ctx, "Logon", 1, body)
        return status, message, code, bool(result)

    @rpc(_returns=_STATUS, _out_variable_names=_STATUS_NAMES, _throws=VendorErrorDetail)
    def Logoff(ctx: Any) -> Any:
        def body(lab: LabState) -> tuple[Any, ...]:
            lab.logoff(_cookie(ctx))
            return ()

        return _call(ctx, "Logoff", 0, body)

    @rpc(
        _STR,
        _STR,
        _STR,
        _INT,
        _INT,
        _returns=(*_STATUS, _INT, _INT, _INT, _INT, _Results),
        _out_variable_names=(
            *_STATUS_NAMES,
            "PageNumber",
            "PageSize",
            "TotalPages",
            "TotalRecords",
            "Results",
        ),
        _throws=VendorErrorDetail,
    )
    def GetResults(
        ctx: Any,
        MRN: str | None,
        FromDate: str | None,
        ToDate: str | None,
        PageNumber: int | None,
        PageSize: int | None,
    ) -> Any:
        def body(lab: LabState) -> tuple[Any, ...]:
            page = lab.get_results(_cookie(ctx), MRN, FromDate, ToDate, PageNumber, PageSize)
            return (
                page.page_number,
                page.page_size,
                page.total_pages,
                page.total_records,
                [LabResult(**r._asdict()) for r in page.results],
            )

        return _call(ctx, "GetResults", 5, body)

    @rpc(
        _STR,
        _returns=(*_STATUS, LabReport.customize(**OPTIONAL)),
        _out_variable_names=(*_STATUS_NAMES, "Report"),
        _throws=VendorErrorDetail,
    )
    def GetReport(ctx: Any, AccessionNumber: str | None) -> Any:
        def body(lab: LabState) -> tuple[Any, ...]:
            return (_report(lab.get_report(_cookie(ctx), AccessionNumber)),)

        return _call(ctx, "GetReport", 1, body)


def _application() -> Any:
    return Application(
        [LabService],
        tns=TNS,
        name="LabService",
        in_protocol=Soap11(validator="lxml"),
        out_protocol=Soap11(),
    )


def build_wsgi_app(lab: LabState) -> WsgiApp:
    return build_wsgi(_application(), lab, tns=TNS, bad_request="LAB-BAD-REQUEST")


def wsdl_document(location: str) -> bytes:
    return _wsdl_document(_application(), location)


CHECKED_IN_LOCATION = "http://127.0.0.1:8081/lab"


def checked_in_wsdl() -> bytes:
    return pretty_wsdl(wsdl_document(CHECKED_IN_LOCATION))
