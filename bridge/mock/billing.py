"""The mock billing system: SOAP 1.1 at ``/billing``, credentials in every body.

No session: ``UserId`` and ``Password`` are the first two children of
every request. Codes are the standard ones (ICD-10-CM, CPT), checked
against the lists in :mod:`bridge.mock.codes`; dates are ``yyyyMMdd``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar, cast

from spyne import Application, ComplexModel, ServiceBase, Unicode
from spyne import Decimal as XsDecimal
from spyne.protocol.soap import Soap11

from bridge.mock.billing_state import BillingState
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

TNS = "urn:billing-sys:claims:2011"


class CodeList(ComplexModel):  # type: ignore[misc]
    __namespace__ = TNS
    _type_info: ClassVar[list[tuple[str, Any]]] = [
        ("Code", Unicode(min_occurs=0, max_occurs="unbounded", nillable=False)),
    ]


VendorErrorDetail = vendor_error_type(TNS)


def _state(ctx: Any) -> BillingState:
    return cast(BillingState, ctx.udc)


def _codes(value: Any) -> list[str | None]:
    return list(getattr(value, "Code", None) or []) if value is not None else []


class BillingService(ServiceBase):  # type: ignore[misc]
    @rpc(
        Unicode(**REQUIRED),
        Unicode(**REQUIRED),
        Unicode(**REQUIRED),
        Unicode(**REQUIRED),
        CodeList.customize(**OPTIONAL),
        CodeList.customize(**OPTIONAL),
        XsDecimal(**REQUIRED),
        _returns=(Unicode(**REQUIRED), Unicode(**REQUIRED)),
        _out_variable_names=("ClaimNumber", "Status"),
        _throws=VendorErrorDetail,
    )
    def SubmitClaim(
        ctx: Any,
        UserId: str,
        Password: str,
        MRN: str,
        EncounterDate: str,
        DiagnosisCodes: Any,
        ProcedureCodes: Any,
        Amount: Decimal,
    ) -> tuple[str, str]:
        state = _state(ctx)
        with operation(state, TNS, "SubmitClaim"):
            state.authenticate(UserId, Password)
            claim = state.submit(
                MRN, EncounterDate, _codes(DiagnosisCodes), _codes(ProcedureCodes), Amount
            )
            return claim.number, claim.status(0)

    @rpc(
        Unicode(**REQUIRED),
        Unicode(**REQUIRED),
        Unicode(**REQUIRED),
        _returns=(
            Unicode(**REQUIRED),
            Unicode(**REQUIRED),
            Unicode(**REQUIRED),
            Unicode(**REQUIRED),
            Unicode(**REQUIRED),
            XsDecimal(**REQUIRED),
            XsDecimal(**OPTIONAL),
            CodeList.customize(**REQUIRED),
            CodeList.customize(**REQUIRED),
        ),
        _out_variable_names=(
            "ClaimNumber",
            "MRN",
            "Status",
            "SubmittedDate",
            "EncounterDate",
            "Amount",
            "PaidAmount",
            "DiagnosisCodes",
            "ProcedureCodes",
        ),
        _throws=VendorErrorDetail,
    )
    def GetClaimStatus(ctx: Any, UserId: str, Password: str, ClaimNumber: str) -> tuple[Any, ...]:
        state = _state(ctx)
        with operation(state, TNS, "GetClaimStatus"):
            state.authenticate(UserId, Password)
            claim, status = state.query(ClaimNumber)
            decided = status in ("PAID", "DENIED")
            return (
                claim.number,
                claim.mrn,
                status,
                claim.submitted_date,
                claim.encounter_date,
                claim.amount,
                claim.paid_amount if decided else None,
                CodeList(Code=list(claim.diagnoses)),
                CodeList(Code=list(claim.procedures)),
            )


def _application() -> Any:
    return Application(
        [BillingService],
        tns=TNS,
        name="BillingService",
        in_protocol=Soap11(validator="lxml"),
        out_protocol=Soap11(),
    )


def build_wsgi_app(state: BillingState) -> WsgiApp:
    return build_wsgi(_application(), state, tns=TNS, bad_request="BILL-BAD-REQUEST")


def wsdl_document(location: str) -> bytes:
    return _wsdl_document(_application(), location)


CHECKED_IN_LOCATION = "http://127.0.0.1:8081/billing"


def checked_in_wsdl() -> bytes:
    return pretty_wsdl(wsdl_document(CHECKED_IN_LOCATION))
