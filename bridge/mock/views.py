"""JSON views of each legacy system's records, under ``/_mock/<system>/...``.

Tests use them to see what a SOAP call wrote (a booking, a vital, a
claim) without going through SOAP. Keys are the SOAP element names, so a
view row compares directly with a parsed SOAP record. Per-patient views
take ``?mrn=`` (required; an unknown MRN answers 404); every list view
takes ``limit`` and ``offset``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.mock.hospital_state import Hospital
from bridge.mock.sidedoor import BadRequest, error, query_int

__all__ = ["routes"]

_Handler = Callable[[Request], Awaitable[JSONResponse]]


def _page(request: Request, rows: list[Any]) -> JSONResponse:
    try:
        offset = query_int(request, "offset", 0)
        limit = query_int(request, "limit", len(rows))
    except BadRequest as exc:
        return error(400, str(exc))
    return JSONResponse(rows[offset : offset + limit])


def routes(hospital: Hospital) -> list[Route]:
    """The record views, bound to the running hospital."""
    world = hospital.world
    mrns = {p.mrn for p in world.patients}

    def per_patient(rows_for: Callable[[str, Request], list[Any]]) -> _Handler:
        async def handler(request: Request) -> JSONResponse:
            mrn = request.query_params.get("mrn")
            if not mrn:
                return error(400, "'mrn' is required, e.g. ?mrn=100001")
            if mrn not in mrns:
                return error(404, "no patient with that MRN")
            try:
                rows = rows_for(mrn, request)
            except BadRequest as exc:
                return error(400, str(exc))
            return _page(request, rows)

        return handler

    clinical = world.clinical

    def vitals(mrn: str, request: Request) -> list[Any]:
        wanted = request.query_params.get("type")
        rows = [r._asdict() for r in hospital.ehr.vitals(mrn)]
        return [r for r in rows if wanted is None or r["TypeCode"] == wanted]

    def lab_results(mrn: str, request: Request) -> list[Any]:
        first = request.query_params.get("from", "")
        last = request.query_params.get("to", "9999-12-31")
        return [r._asdict() for r in world.lab.results(mrn) if first <= r.CollectedAt[:10] <= last]

    async def lab_report(request: Request) -> JSONResponse:
        report = world.lab.report(request.path_params["accession"])
        if report is None:
            return error(404, "no accession with that number")
        return JSONResponse(report.to_dict())

    async def providers(request: Request) -> JSONResponse:
        rows = [
            {**p.to_soap_dict(), "SlotMinutes": p.slot_minutes, "FirstName": p.first_name,
             "LastName": p.last_name}
            for p in world.providers
        ]  # fmt: skip
        return _page(request, rows)

    async def slots(request: Request) -> JSONResponse:
        params = request.query_params
        status = params.get("status")
        if status is not None and status not in ("FREE", "BOOKED"):
            return error(400, f"'status' must be FREE or BOOKED, got {status!r}")
        rows = hospital.scheduling.slot_view(
            params.get("provider"), status, params.get("from"), params.get("to")
        )
        return _page(request, rows)

    def appointments(mrn: str, request: Request) -> list[Any]:
        return [a._asdict() for a in hospital.scheduling.appointments(mrn)]

    async def appointment(request: Request) -> JSONResponse:
        found = hospital.scheduling.appointment(request.path_params["confirmation"])
        if found is None:
            return error(404, "no appointment with that confirmation number")
        return JSONResponse(found._asdict())

    def prescriptions(mrn: str, request: Request) -> list[Any]:
        return [rx._asdict() for rx in world.pharmacy.by_mrn.get(mrn, ())]

    def claims(mrn: str, request: Request) -> list[Any]:
        return hospital.billing.claims_view(mrn)

    async def claim(request: Request) -> JSONResponse:
        view = hospital.billing.claim_view(request.path_params["number"])
        if view is None:
            return error(404, "no claim with that number")
        return JSONResponse(view)

    def chart(kind: str) -> Callable[[str, Request], list[Any]]:
        table: dict[str, Any] = getattr(clinical, kind)
        return lambda mrn, request: [row._asdict() for row in table.get(mrn, ())]

    get = ["GET"]
    return [
        Route("/_mock/ehr/allergies", per_patient(chart("allergies")), methods=get),
        Route("/_mock/ehr/problems", per_patient(chart("problems")), methods=get),
        Route("/_mock/ehr/medications", per_patient(chart("medications")), methods=get),
        Route("/_mock/ehr/vitals", per_patient(vitals), methods=get),
        Route("/_mock/lab/results", per_patient(lab_results), methods=get),
        Route("/_mock/lab/reports/{accession}", lab_report, methods=get),
        Route("/_mock/scheduling/providers", providers, methods=get),
        Route("/_mock/scheduling/slots", slots, methods=get),
        Route("/_mock/scheduling/appointments", per_patient(appointments), methods=get),
        Route("/_mock/scheduling/appointments/{confirmation}", appointment, methods=get),
        Route("/_mock/pharmacy/prescriptions", per_patient(prescriptions), methods=get),
        Route("/_mock/billing/claims", per_patient(claims), methods=get),
        Route("/_mock/billing/claims/{number}", claim, methods=get),
    ]
