"""The mock EHR: a spyne SOAP 1.1 document/literal service at ``/ehr``.

The wire contract (names, order, fault shape) is what the gateway's
mapping files are written against; ``wsdl/hospital/ehr.wsdl`` is its
checked-in copy and a test keeps the two equal. All behaviour lives in
:class:`bridge.mock.ehr_state.EhrState`; this module only translates
between SOAP and that state.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar, cast

from spyne import Application, Array, ComplexModel, Integer, ServiceBase, Unicode
from spyne import Decimal as XsDecimal
from spyne.protocol.soap import Soap11

from bridge.mock.clinical import VitalReading
from bridge.mock.data import PatientRecord
from bridge.mock.ehr_state import EhrState, Page, ReadingInput, SearchCriteria
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

__all__ = [
    "CHECKED_IN_LOCATION",
    "TNS",
    "WsgiApp",
    "build_wsgi_app",
    "checked_in_wsdl",
    "wsdl_document",
]

TNS = "urn:hospital:ehr"


class SessionHeader(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [("SessionId", Unicode(**REQUIRED))]


class Patient(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    # A list, not class attributes, so the element order is explicit.
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("MRN", Unicode(**REQUIRED)),
        ("Name", Unicode(**REQUIRED)),
        ("DOB", Unicode(**REQUIRED)),
        ("Sex", Unicode(**REQUIRED)),
        ("AddressLine1", Unicode(**OPTIONAL)),
        ("AddressLine2", Unicode(**OPTIONAL)),
        ("City", Unicode(**OPTIONAL)),
        ("State", Unicode(**OPTIONAL)),
        ("Zip", Unicode(**OPTIONAL)),
        ("Phone", Unicode(**OPTIONAL)),
        ("MaritalStatus", Unicode(**OPTIONAL)),
        ("Language", Unicode(**OPTIONAL)),
        ("DeceasedFlag", Unicode(**REQUIRED)),
        ("DeceasedDate", Unicode(**OPTIONAL)),
    ]


class Allergy(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("AllergyId", Unicode(**REQUIRED)),
        ("Substance", Unicode(**REQUIRED)),
        ("SubstanceCode", Unicode(**REQUIRED)),
        ("Reaction", Unicode(**OPTIONAL)),
        ("Severity", Unicode(**OPTIONAL)),
        ("Status", Unicode(**REQUIRED)),
        ("RecordedDate", Unicode(**OPTIONAL)),
    ]


class Problem(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("ProblemId", Unicode(**REQUIRED)),
        ("Description", Unicode(**REQUIRED)),
        ("ICD10", Unicode(**REQUIRED)),
        ("OnsetDate", Unicode(**OPTIONAL)),
        ("Status", Unicode(**REQUIRED)),
        ("Sensitive", Unicode(**REQUIRED)),
    ]


class Medication(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("MedId", Unicode(**REQUIRED)),
        ("Name", Unicode(**REQUIRED)),
        ("LocalCode", Unicode(**REQUIRED)),
        ("Dose", Unicode(**OPTIONAL)),
        ("Route", Unicode(**OPTIONAL)),
        ("Frequency", Unicode(**OPTIONAL)),
        ("StartDate", Unicode(**OPTIONAL)),
        ("Status", Unicode(**REQUIRED)),
    ]


class Reading(ComplexModel):  # type: ignore[misc]
    """A vital-sign reading; ``ReadingId`` is absent on the way in, set on the way out."""

    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("ReadingId", Unicode(**OPTIONAL)),
        ("TypeCode", Unicode(**REQUIRED)),
        ("Value", XsDecimal(**REQUIRED)),
        ("Unit", Unicode(**REQUIRED)),
        ("TakenAt", Unicode(**REQUIRED)),
        ("DeviceId", Unicode(**OPTIONAL)),
    ]


class ReadingIdList(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("ReadingId", Unicode(min_occurs=0, max_occurs="unbounded", nillable=False)),
    ]


VendorErrorDetail = vendor_error_type(TNS)

_PatientList = Array(Patient, **OPTIONAL)
_PAGE_RETURNS = (_PatientList, Unicode(**OPTIONAL), Integer(**REQUIRED))
_PAGE_NAMES = ("Patients", "CursorId", "TotalCount")
_HEADER = (SessionHeader,)


def _patient(record: PatientRecord) -> Any:
    return Patient(**record.to_soap_dict())


def _page(page: Page) -> tuple[list[Any], str | None, int]:
    return [_patient(r) for r in page.records], page.cursor_id, page.total


def _reading(reading: VitalReading) -> Any:
    values = reading._asdict()
    values["Value"] = Decimal(reading.Value)
    if reading.DeviceId is None:
        del values["DeviceId"]
    return Reading(**values)


def _ehr(ctx: Any) -> EhrState:
    return cast(EhrState, ctx.udc)


def _session_id(ctx: Any) -> str | None:
    header = ctx.in_header
    return None if header is None else cast("str | None", header.SessionId)


class EhrService(ServiceBase):  # type: ignore[misc]
    """The operations, in the order the WSDL lists them."""

    @rpc(
        Unicode(**REQUIRED),
        Unicode(**REQUIRED),
        _returns=Unicode(**REQUIRED),
        _out_variable_name="SessionId",
        _throws=VendorErrorDetail,
    )
    def Login(ctx: Any, Username: str, Password: str) -> str:
        with operation(_ehr(ctx), TNS, "Login", injectable=False):
            return _ehr(ctx).login(Username, Password)

    @rpc(
        Unicode(**REQUIRED),
        _returns=Unicode(**REQUIRED),
        _out_variable_name="Result",
        _throws=VendorErrorDetail,
    )
    def Logout(ctx: Any, SessionId: str) -> str:
        with operation(_ehr(ctx), TNS, "Logout"):
            _ehr(ctx).logout(SessionId)
            return "OK"

    @rpc(
        Unicode(**REQUIRED),
        _in_header=_HEADER,
        _returns=Patient.customize(**REQUIRED),
        _out_variable_name="Patient",
        _throws=VendorErrorDetail,
    )
    def GetPatient(ctx: Any, MRN: str) -> Any:
        with operation(_ehr(ctx), TNS, "GetPatient"):
            return _patient(_ehr(ctx).get_patient(_session_id(ctx), MRN))

    @rpc(
        Unicode(**OPTIONAL),
        Unicode(**OPTIONAL),
        Unicode(**OPTIONAL),
        Unicode(**OPTIONAL),
        Unicode(**OPTIONAL),
        _in_header=_HEADER,
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
        with operation(_ehr(ctx), TNS, "FindPatients"):
            criteria = SearchCriteria(
                last_name=LastName, first_name=FirstName, dob=DOB, sex=Sex, mrn=MRN
            )
            return _page(_ehr(ctx).find_patients(_session_id(ctx), criteria))

    @rpc(
        Unicode(**REQUIRED),
        _in_header=_HEADER,
        _returns=_PAGE_RETURNS,
        _out_variable_names=_PAGE_NAMES,
        _throws=VendorErrorDetail,
    )
    def FetchNext(ctx: Any, CursorId: str) -> tuple[list[Any], str | None, int]:
        with operation(_ehr(ctx), TNS, "FetchNext"):
            return _page(_ehr(ctx).fetch_next(_session_id(ctx), CursorId))

    # -- the selected patient's chart ------------------------------------------

    @rpc(
        Unicode(**REQUIRED),
        _in_header=_HEADER,
        _returns=Unicode(**REQUIRED),
        _out_variable_name="Result",
        _throws=VendorErrorDetail,
    )
    def SelectPatient(ctx: Any, MRN: str) -> str:
        with operation(_ehr(ctx), TNS, "SelectPatient"):
            _ehr(ctx).select_patient(_session_id(ctx), MRN)
            return "OK"

    @rpc(
        _in_header=_HEADER,
        _returns=Array(Allergy, **OPTIONAL),
        _out_variable_name="Allergies",
        _throws=VendorErrorDetail,
    )
    def GetAllergies(ctx: Any) -> list[Any]:
        with operation(_ehr(ctx), TNS, "GetAllergies"):
            return [Allergy(**a._asdict()) for a in _ehr(ctx).allergies(_session_id(ctx))]

    @rpc(
        _in_header=_HEADER,
        _returns=Array(Problem, **OPTIONAL),
        _out_variable_name="Problems",
        _throws=VendorErrorDetail,
    )
    def GetProblems(ctx: Any) -> list[Any]:
        with operation(_ehr(ctx), TNS, "GetProblems"):
            return [Problem(**p._asdict()) for p in _ehr(ctx).problems(_session_id(ctx))]

    @rpc(
        _in_header=_HEADER,
        _returns=Array(Medication, **OPTIONAL),
        _out_variable_name="Medications",
        _throws=VendorErrorDetail,
    )
    def GetMedications(ctx: Any) -> list[Any]:
        with operation(_ehr(ctx), TNS, "GetMedications"):
            return [Medication(**m._asdict()) for m in _ehr(ctx).medications(_session_id(ctx))]

    # -- vitals ---------------------------------------------------------------

    @rpc(
        Unicode(**REQUIRED),
        Array(Reading, **REQUIRED),
        _in_header=_HEADER,
        _returns=(Integer(**REQUIRED), ReadingIdList.customize(**REQUIRED)),
        _out_variable_names=("Accepted", "ReadingIds"),
        _throws=VendorErrorDetail,
    )
    def RecordVitals(ctx: Any, MRN: str, Readings: list[Any] | None) -> tuple[int, Any]:
        with operation(_ehr(ctx), TNS, "RecordVitals"):
            batch = [
                ReadingInput(
                    type_code=r.TypeCode,
                    value=r.Value,
                    unit=r.Unit,
                    taken_at=r.TakenAt,
                    device_id=r.DeviceId,
                )
                for r in Readings or ()
                if r is not None
            ]
            ids = _ehr(ctx).record_vitals(_session_id(ctx), MRN, batch)
            return len(ids), ReadingIdList(ReadingId=ids)

    @rpc(
        Unicode(**REQUIRED),
        Unicode(**OPTIONAL),
        Unicode(**OPTIONAL),
        _in_header=_HEADER,
        _returns=Array(Reading, **OPTIONAL),
        _out_variable_name="Readings",
        _throws=VendorErrorDetail,
    )
    def GetVitals(ctx: Any, MRN: str, FromDate: str | None, ToDate: str | None) -> list[Any]:
        with operation(_ehr(ctx), TNS, "GetVitals"):
            readings = _ehr(ctx).get_vitals(_session_id(ctx), MRN, FromDate, ToDate)
            return [_reading(r) for r in readings]


def _application() -> Any:
    return Application(
        [EhrService],
        tns=TNS,
        name="EhrService",
        in_protocol=Soap11(validator="lxml"),
        out_protocol=Soap11(),
    )


def build_wsgi_app(ehr: EhrState) -> WsgiApp:
    """The EHR as a WSGI app bound to ``ehr``; latency is slept per call here."""
    return build_wsgi(_application(), ehr, tns=TNS, bad_request="EHR-BAD-REQUEST")


def wsdl_document(location: str) -> bytes:
    """The WSDL exactly as ``/ehr?wsdl`` serves it, with ``location`` as address."""
    return _wsdl_document(_application(), location)


# Where the checked-in copy says the service lives: the documented dev port.
CHECKED_IN_LOCATION = "http://127.0.0.1:8081/ehr"


def checked_in_wsdl() -> bytes:
    """The WSDL as ``wsdl/hospital/ehr.wsdl`` stores it: pretty, fixed address."""
    return pretty_wsdl(wsdl_document(CHECKED_IN_LOCATION))
