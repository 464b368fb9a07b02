"""The mock scheduling system: SOAP 1.2 at ``/scheduling``, WS-Security on every call.

No login: each request carries a ``wsse:Security`` header with a
PasswordDigest UsernameToken (see :mod:`bridge.mock.wssec`). Faults are
SOAP 1.2 Faults (``Sender``/``Receiver``) with a ``tns:VendorError`` in
``Detail``. Times are hospital-local, ``yyyy-MM-ddTHH:mm``.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

from spyne import Application, Array, Boolean, ComplexModel, Integer, ServiceBase, Unicode

from bridge.mock.sched_state import SchedulingState
from bridge.mock.scheddata import Appointment as AppointmentRecord
from bridge.mock.soapkit import (
    OPTIONAL,
    REQUIRED,
    VendorSoap12,
    WsgiApp,
    build_wsgi,
    operation,
    pretty_wsdl,
    rpc,
    vendor_error_type,
)
from bridge.mock.soapkit import wsdl_document as _wsdl_document

__all__ = ["CHECKED_IN_LOCATION", "TNS", "build_wsgi_app", "checked_in_wsdl", "wsdl_document"]

TNS = "urn:sched-systems:scheduling:v3"


class Provider(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("ProviderId", Unicode(**REQUIRED)),
        ("Name", Unicode(**REQUIRED)),
        ("Specialty", Unicode(**REQUIRED)),
        ("NPI", Unicode(**REQUIRED)),
        ("Active", Boolean(**REQUIRED)),
    ]


class Slot(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("SlotId", Unicode(**REQUIRED)),
        ("ProviderId", Unicode(**REQUIRED)),
        ("Start", Unicode(**REQUIRED)),
        ("End", Unicode(**REQUIRED)),
        ("DurationMinutes", Integer(**REQUIRED)),
        ("Status", Unicode(**REQUIRED)),
    ]


class Appointment(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("ConfirmationNumber", Unicode(**REQUIRED)),
        ("SlotId", Unicode(**REQUIRED)),
        ("ProviderId", Unicode(**REQUIRED)),
        ("Start", Unicode(**REQUIRED)),
        ("End", Unicode(**REQUIRED)),
        ("Reason", Unicode(**OPTIONAL)),
        ("Status", Unicode(**REQUIRED)),
    ]


VendorErrorDetail = vendor_error_type(TNS)


def _state(ctx: Any) -> SchedulingState:
    return cast(SchedulingState, ctx.udc)


def _appointment(record: AppointmentRecord) -> Any:
    values = record._asdict()
    del values["MRN"]
    if not values["Reason"]:
        del values["Reason"]
    return Appointment(**values)


class SchedulingService(ServiceBase):  # type: ignore[misc]
    @rpc(
        _returns=Array(Provider, **OPTIONAL),
        _out_variable_name="Providers",
        _throws=VendorErrorDetail,
    )
    def GetProviders(ctx: Any) -> list[Any]:
        state = _state(ctx)
        with operation(state, TNS, "GetProviders"):
            state.authenticate(ctx.in_header_doc)
            return [Provider(**p.to_soap_dict()) for p in state.providers()]

    @rpc(
        Unicode(**REQUIRED),
        Unicode(**REQUIRED),
        Unicode(**REQUIRED),
        _returns=Array(Slot, **OPTIONAL),
        _out_variable_name="Slots",
        _throws=VendorErrorDetail,
    )
    def GetOpenSlots(ctx: Any, ProviderId: str, FromDate: str, ToDate: str) -> list[Any]:
        state = _state(ctx)
        with operation(state, TNS, "GetOpenSlots"):
            state.authenticate(ctx.in_header_doc)
            slots = state.open_slots(ProviderId, FromDate, ToDate)
            return [Slot(**s._asdict(), Status="FREE") for s in slots]

    @rpc(
        Unicode(**REQUIRED),
        Unicode(**REQUIRED),
        Unicode(**OPTIONAL),
        _returns=Unicode(**REQUIRED),
        _out_variable_name="ConfirmationNumber",
        _throws=VendorErrorDetail,
    )
    def BookAppointment(ctx: Any, SlotId: str, MRN: str, Reason: str | None) -> str:
        state = _state(ctx)
        with operation(state, TNS, "BookAppointment"):
            state.authenticate(ctx.in_header_doc)
            return state.book(SlotId, MRN, Reason)

    @rpc(
        Unicode(**REQUIRED),
        _returns=Unicode(**REQUIRED),
        _out_variable_name="Result",
        _throws=VendorErrorDetail,
    )
    def CancelAppointment(ctx: Any, ConfirmationNumber: str) -> str:
        state = _state(ctx)
        with operation(state, TNS, "CancelAppointment"):
            state.authenticate(ctx.in_header_doc)
            state.cancel(ConfirmationNumber)
            return "OK"

    @rpc(
        Unicode(**REQUIRED),
        _returns=Array(Appointment, **OPTIONAL),
        _out_variable_name="Appointments",
        _throws=VendorErrorDetail,
    )
    def GetAppointments(ctx: Any, MRN: str) -> list[Any]:
        state = _state(ctx)
        with operation(state, TNS, "GetAppointments"):
            state.authenticate(ctx.in_header_doc)
            return [_appointment(a) for a in state.appointments(MRN)]


def _application() -> Any:
    return Application(
        [SchedulingService],
        tns=TNS,
        name="SchedulingService",
        in_protocol=VendorSoap12(validator="lxml"),
        out_protocol=VendorSoap12(),
    )


def build_wsgi_app(state: SchedulingState) -> WsgiApp:
    return build_wsgi(_application(), state, tns=TNS, bad_request="SCHED-BAD-REQUEST")


def wsdl_document(location: str) -> bytes:
    return _wsdl_document(_application(), location)


CHECKED_IN_LOCATION = "http://127.0.0.1:8081/scheduling"


def checked_in_wsdl() -> bytes:
    return pretty_wsdl(wsdl_document(CHECKED_IN_LOCATION))
