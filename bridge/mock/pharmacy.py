"""The mock pharmacy: SOAP 1.1 at ``/pharmacy``, the session ticket in the body.

``OpenSession`` hands out a ``Ticket``; every other request carries it as
its first body element (not in a SOAP header). A bad or expired ticket
faults with ``RX-TICKET``. ``GetPrescriptions`` pages with Offset/Limit.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

from spyne import Application, Array, ComplexModel, Integer, ServiceBase, Unicode
from spyne.protocol.soap import Soap11

from bridge.mock.rx_state import PharmacyState
from bridge.mock.soapkit import (
    OPTIONAL,
    REQUIRED,
    WsgiApp,
    build_wsgi,
    operation,
    pretty_wsdl,
    rpc,
    vendor_error_type,
)
from bridge.mock.soapkit import wsdl_document as _wsdl_document

__all__ = ["CHECKED_IN_LOCATION", "TNS", "build_wsgi_app", "checked_in_wsdl", "wsdl_document"]

TNS = "urn:rxvendor:pharmacy"


class Prescription(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("RxNumber", Unicode(**REQUIRED)),
        ("MRN", Unicode(**REQUIRED)),
        ("DrugCode", Unicode(**REQUIRED)),
        ("DrugName", Unicode(**REQUIRED)),
        ("Sig", Unicode(**REQUIRED)),
        ("Quantity", Integer(**REQUIRED)),
        ("Refills", Integer(**REQUIRED)),
        ("Prescriber", Unicode(**REQUIRED)),
        ("PrescriberId", Unicode(**REQUIRED)),
        ("WrittenDate", Unicode(**REQUIRED)),
        ("Status", Unicode(**REQUIRED)),
    ]


VendorErrorDetail = vendor_error_type(TNS)


def _state(ctx: Any) -> PharmacyState:
    return cast(PharmacyState, ctx.udc)


class PharmacyService(ServiceBase):  # type: ignore[misc]
    @rpc(
        Unicode(**REQUIRED),
        Unicode(**REQUIRED),
        _returns=Unicode(**REQUIRED),
        _out_variable_name="Ticket",
        _throws=VendorErrorDetail,
    )
    def OpenSession(ctx: Any, User: str, Pass: str) -> str:
        state = _state(ctx)
        with operation(state, TNS, "OpenSession", injectable=False):
            return state.open_session(User, Pass)

    @rpc(
        Unicode(**REQUIRED),
        _returns=Unicode(**REQUIRED),
        _out_variable_name="Result",
        _throws=VendorErrorDetail,
    )
    def CloseSession(ctx: Any, Ticket: str) -> str:
        state = _state(ctx)
        with operation(state, TNS, "CloseSession"):
            state.close_session(Ticket)
            return "OK"

    @rpc(
        Unicode(**REQUIRED),
        Unicode(**REQUIRED),
        Integer(**OPTIONAL),
        Integer(**OPTIONAL),
        _returns=(Integer(**REQUIRED), Array(Prescription, **OPTIONAL)),
        _out_variable_names=("TotalCount", "Prescriptions"),
        _throws=VendorErrorDetail,
    )
    def GetPrescriptions(
        ctx: Any, Ticket: str, MRN: str, Offset: int | None, Limit: int | None
    ) -> tuple[int, list[Any]]:
        state = _state(ctx)
        with operation(state, TNS, "GetPrescriptions"):
            page = state.prescriptions(Ticket, MRN, Offset, Limit)
            return page.total, [Prescription(**rx._asdict()) for rx in page.prescriptions]


def _application() -> Any:
    return Application(
        [PharmacyService],
        tns=TNS,
        name="PharmacyService",
        in_protocol=Soap11(validator="lxml"),
        out_protocol=Soap11(),
    )


def build_wsgi_app(state: PharmacyState) -> WsgiApp:
    return build_wsgi(_application(), state, tns=TNS, bad_request="RX-BAD-REQUEST")


def wsdl_document(location: str) -> bytes:
    return _wsdl_document(_application(), location)


CHECKED_IN_LOCATION = "http://127.0.0.1:8081/pharmacy"


def checked_in_wsdl() -> bytes:
    return pretty_wsdl(wsdl_document(CHECKED_IN_LOCATION))
