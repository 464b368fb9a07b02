"""Resources the gateway keeps itself, in its store: Consent and AuditEvent; /admin.

- `POST /fhir/Consent`, `PUT|GET|DELETE /fhir/Consent/{id}`, `GET /fhir/Consent?patient=`:
  a patient's privacy choices (see bridge/privacy.py for what a Consent may say).
- `GET /fhir/AuditEvent?patient=&date=`, `GET /fhir/AuditEvent/{id}`: the audit trail,
  for tokens allowed to read AuditEvent (auditors; a patient scope sees its own patient).
- `POST|GET /admin/revocations`, `DELETE /admin/revocations/{id}`: the revocation
  list, behind the admin credential (`admin.token`), not behind access tokens.
"""

from __future__ import annotations

import calendar
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.audit import AuditTrail
from bridge.auth.middleware import authorize
from bridge.auth.tokens import Principal
from bridge.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from bridge.fhir.jsondepth import check_json_depth
from bridge.fhir.negotiate import FHIR_JSON, check_acceptable
from bridge.fhir.response import FhirResponse
from bridge.privacy import Privacy
from bridge.settings import Limits

__all__ = ["LOCAL_TYPES", "local_capabilities", "local_routes"]

LOCAL_TYPES = ("AuditEvent", "Consent")
_DATE = re.compile(
    r"^(eq|ne|gt|lt|ge|le|sa|eb)?(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?)?)?$"
)
_DAY = 86_400
# `_before` is a position in the trail that a `next` link gave: a row number.
_MAX_POSITION = 2**63 - 1
_MAX_JSON_DEPTH: int = Limits.model_fields["max_json_depth"].default


def _principal(request: Request) -> Principal | None:
    principal = request.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else None


def date_bounds(values: list[str]) -> tuple[float | None, float | None]:
    """FHIR date search values (with prefixes) as one [since, until) range of epoch seconds."""
    since: float | None = None
    until: float | None = None
    for raw in values:
        m = _DATE.match(raw)
        if m is None:
            raise InvalidRequest(
                f"date: {raw!r} is not a FHIR date; use e.g. 2026-11-24 or ge2026-11-24T08:00:00Z",
                expression=["date"],
            )
        prefix = m.group(1) or "eq"
        if prefix in ("ne", "sa", "eb"):
            raise InvalidRequest(
                f"date: the prefix {prefix!r} is not supported here; use eq, gt, ge, lt or le.",
                expression=["date"],
            )
        year, month, day = int(m.group(2)), m.group(3), m.group(4)
        # The end of each range is counted in seconds, not built as a datetime: the
        # day after 9999-12-31 (or the second after its last) is past datetime's range.
        try:
            if m.group(5) is not None:
                zone = m.group(8)
                start = datetime.fromisoformat(
                    f"{m.group(2)}-{month}-{day}T{m.group(5)}:{m.group(6)}:{m.group(7) or '00'}"
                    + ("+00:00" if zone == "Z" else zone)
                )
                lo = start.timestamp()
                hi = lo + (1 if m.group(7) else 60)
            elif day is not None:
                lo = datetime(year, int(month or 1), int(day), tzinfo=UTC).timestamp()
                hi = lo + _DAY
            elif month is not None:
                lo = datetime(year, int(month), 1, tzinfo=UTC).timestamp()
                hi = lo + calendar.monthrange(year, int(month))[1] * _DAY
            else:
                lo = datetime(year, 1, 1, tzinfo=UTC).timestamp()
                hi = datetime(year, 12, 31, tzinfo=UTC).timestamp() + _DAY
        except (ValueError, OverflowError):
            raise InvalidRequest(
                f"date: {raw!r} is not a valid date.", expression=["date"]
            ) from None
        low: float | None = {"eq": lo, "ge": lo, "gt": hi}.get(prefix)
        high: float | None = {"eq": hi, "le": hi, "lt": lo}.get(prefix)
        if low is not None:
            since = low if since is None else max(since, low)
        if high is not None:
            until = high if until is None else min(until, high)
    return since, until


def local_capabilities() -> list[dict[str, Any]]:
    return [
        {
            "type": "AuditEvent",
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": [
                {"name": "patient", "type": "reference"},
                {"name": "date", "type": "date"},
            ],
            "documentation": "The gateway's audit trail: one AuditEvent per request.",
        },
        {
            "type": "Consent",
            "interaction": [
                {"code": "read"},
                {"code": "search-type"},
                {"code": "create"},
                {"code": "update"},
                {"code": "delete"},
            ],
            "searchParam": [
                {"name": "patient", "type": "reference"},
                {"name": "status", "type": "token"},
            ],
            "documentation": "Patients' privacy choices: data denied to chosen apps.",
        },
    ]


def _patient_param(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.removeprefix("Patient/")
    if not value or "/" in value:
        raise InvalidRequest("patient: give a Patient id or Patient/[id].", expression=["patient"])
    return value


def local_routes(
    *,
    privacy: Callable[[], Privacy | None],
    trail: Callable[[], AuditTrail | None],
    admin_token: str | None,
    base: Callable[[Request], str],
    max_body: int,
    max_json_depth: int = _MAX_JSON_DEPTH,
) -> list[Route]:
    def need_privacy() -> Privacy:
        current = privacy()
        if current is None:
            raise NotFound("The gateway's store is not configured.")
        return current

    def pretty(request: Request) -> bool:
        return request.query_params.get("_pretty") == "true"

    def negotiate(request: Request) -> None:
        """406 unless the client takes FHIR JSON, as on every other FHIR route."""
        check_acceptable(request.headers.get("accept"), request.query_params.get("_format"))

    async def body_json(request: Request, accepted: tuple[str, ...]) -> Any:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in accepted:
            raise UnsupportedMediaType(f"Send the body as {' or '.join(accepted)}.")
        body = await request.body()
        if len(body) > max_body:
            raise PayloadTooLarge()
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidRequest("The body is not valid JSON.") from None
        check_json_depth(parsed, body, max_json_depth)
        return parsed

    def own(request: Request, rtype: str, letter: str, patient: str | None) -> str | None:
        """Authorize; the patient a patient-confined token is limited to, else None."""
        principal = _principal(request)
        if not authorize(principal, rtype, letter):
            return None
        assert principal is not None and principal.patient is not None
        if patient is not None and patient != principal.patient:
            raise Forbidden("The access token is limited to another patient's data.")
        return principal.patient

    # -- Consent ------------------------------------------------------------------

    async def consent_create(request: Request) -> Response:
        negotiate(request)
        own(request, "Consent", "c", None)  # the scope first: parsing is for those it allows
        body = await body_json(request, (FHIR_JSON, "application/json"))
        from bridge.privacy import parse_consent

        patient, _, _ = parse_consent({**body, "id": "new"} if isinstance(body, dict) else body)
        own(request, "Consent", "c", patient)
        stored = await need_privacy().save_consent(body, None)
        _note(request, patient)
        location = f"{base(request)}/Consent/{stored['id']}/_history/{stored['meta']['versionId']}"
        return FhirResponse(stored, 201, {"Location": location}, pretty=pretty(request))

    async def consent_update(request: Request) -> Response:
        negotiate(request)
        rid = request.path_params["rid"]
        own(request, "Consent", "u", None)
        body = await body_json(request, (FHIR_JSON, "application/json"))
        if not isinstance(body, dict) or body.get("id") != rid:
            raise InvalidRequest("The Consent's id must match the id in the URL.")
        from bridge.privacy import parse_consent

        patient, _, _ = parse_consent(body)
        current = await need_privacy().consent(rid)
        own(request, "Consent", "u", patient)
        own(request, "Consent", "u", _patient_of(current))
        stored = await need_privacy().save_consent(body, rid)
        _note(request, patient)
        return FhirResponse(stored, 200, pretty=pretty(request))

    async def consent_read(request: Request) -> Response:
        negotiate(request)
        own(request, "Consent", "r", None)  # the scope first: a 404 would tell what exists
        consent = await need_privacy().consent(request.path_params["rid"])
        own(request, "Consent", "r", _patient_of(consent))
        _note(request, _patient_of(consent))
        return FhirResponse(consent, pretty=pretty(request))

    async def consent_delete(request: Request) -> Response:
        negotiate(request)
        rid = request.path_params["rid"]
        own(request, "Consent", "d", None)
        current = await need_privacy().consent(rid)
        own(request, "Consent", "d", _patient_of(current))
        await need_privacy().delete_consent(rid)
        _note(request, _patient_of(current))
        return Response(status_code=204)

    async def consent_search(request: Request) -> Response:
        negotiate(request)
        patient = _patient_param(request.query_params.get("patient"))
        status = request.query_params.get("status")
        confined = own(request, "Consent", "s", patient)
        patient = patient or confined
        found = await need_privacy().consents_of(patient, status)
        for consent in found:
            _note(request, _patient_of(consent))
        params = [(k, v) for k, v in (("patient", patient), ("status", status)) if v]
        return FhirResponse(
            _searchset(base(request), "Consent", params, found), pretty=pretty(request)
        )

    # -- AuditEvent -------------------------------------------------------------------

    async def audit_search(request: Request) -> Response:
        negotiate(request)
        current = trail()
        if current is None:
            raise NotFound("The gateway's store is not configured.")
        patient = _patient_param(request.query_params.get("patient"))
        confined = own(request, "AuditEvent", "s", patient)
        patient = patient or confined
        since, until = date_bounds(request.query_params.getlist("date"))
        try:
            count = int(request.query_params.get("_count", "50"))
        except ValueError:
            raise InvalidRequest("_count takes a whole number.", expression=["_count"]) from None
        count = max(1, min(count, 500))
        before_seq = _position(request.query_params.get("_before"))
        rows = await current.search(
            patient=patient, since=since, until=until, count=count, before=before_seq
        )
        params = [("patient", patient)] if patient else []
        params += [("date", d) for d in request.query_params.getlist("date")]
        params.append(("_count", str(count)))
        events = [event for _, event in rows]
        if confined is not None:
            events = [_seen_by(event, confined) for event in events]
        bundle = _searchset(base(request), "AuditEvent", params, events)
        if len(rows) == count:
            nxt = [*params, ("_before", str(rows[-1][0]))]
            bundle["link"].append(
                {"relation": "next", "url": f"{base(request)}/AuditEvent?{urlencode(nxt)}"}
            )
        return FhirResponse(bundle, pretty=pretty(request))

    async def audit_read(request: Request) -> Response:
        negotiate(request)
        current = trail()
        if current is None:
            raise NotFound("The gateway's store is not configured.")
        principal = _principal(request)
        confined = authorize(principal, "AuditEvent", "r")
        event = await current.get(request.path_params["rid"])
        if event is None:
            raise NotFound("There is no AuditEvent with that id.")
        if confined:
            assert principal is not None
            patients = {
                str(e.get("what", {}).get("reference", "")).removeprefix("Patient/")
                for e in event.get("entity", [])
                if str(e.get("what", {}).get("reference", "")).startswith("Patient/")
            }
            if principal.patient not in patients:
                raise Forbidden("The access token is limited to another patient's data.")
            event = _seen_by(event, principal.patient)
        return FhirResponse(event, pretty=pretty(request))

    # -- /admin ---------------------------------------------------------------------------

    def admin(request: Request) -> Privacy:
        if admin_token is None:
            raise NotFound("The admin endpoints are off: set admin.token (BRIDGE_ADMIN__TOKEN).")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            given.strip().encode(), admin_token.encode()
        ):
            raise Unauthorized("The admin credential is missing or wrong.")
        return need_privacy()

    async def revocation_add(request: Request) -> Response:
        store = admin(request)
        body = await body_json(request, ("application/json",))
        revocation = await store.revoke(body)
        return FhirResponse(revocation.json(), 201, media_type="application/json")

    async def revocation_list(request: Request) -> Response:
        store = admin(request)
        items = [r.json() for r in await store.revocations()]
        return FhirResponse({"revocations": items}, media_type="application/json")

    async def revocation_delete(request: Request) -> Response:
        store = admin(request)
        await store.lift(request.path_params["rid"])
        return Response(status_code=204)

    return [
        Route("/fhir/Consent", consent_create, methods=["POST"]),
        Route("/fhir/Consent", consent_search, methods=["GET"]),
        Route("/fhir/Consent/{rid}", consent_read, methods=["GET"]),
        Route("/fhir/Consent/{rid}", consent_update, methods=["PUT"]),
        Route("/fhir/Consent/{rid}", consent_delete, methods=["DELETE"]),
        Route("/fhir/AuditEvent", audit_search, methods=["GET"]),
        Route("/fhir/AuditEvent/{rid}", audit_read, methods=["GET"]),
        Route("/admin/revocations", revocation_add, methods=["POST"]),
        Route("/admin/revocations", revocation_list, methods=["GET"]),
        Route("/admin/revocations/{rid}", revocation_delete, methods=["DELETE"]),
    ]


def _position(before: str | None) -> int | None:
    """The `_before` of a `next` link: a row number of the trail (400 if it cannot be)."""
    if before is None:
        return None
    try:
        position = int(before)
    except ValueError:
        position = 0
    if not 0 < position <= _MAX_POSITION:
        raise InvalidRequest(
            "_before: not a position in the audit trail; follow the Bundle's next link.",
            expression=["_before"],
        )
    return position


def _seen_by(event: dict[str, Any], patient: str) -> dict[str, Any]:
    """An AuditEvent as a patient may see it: nothing of the other patients it names
    (a search may have returned several), nor the query that found them."""
    own = f"Patient/{patient}"
    entities = []
    for entity in event.get("entity", []):
        reference = str(entity.get("what", {}).get("reference", ""))
        if reference.startswith("Patient/") and reference != own:
            continue
        entities.append({k: v for k, v in entity.items() if k != "query"})
    shown = {**event, "entity": entities}
    if not entities:
        del shown["entity"]
    return shown


def _patient_of(consent: dict[str, Any]) -> str | None:
    reference = str((consent.get("patient") or {}).get("reference", ""))
    return reference.removeprefix("Patient/") if reference.startswith("Patient/") else None


def _note(request: Request, patient: str | None) -> None:
    from bridge.audit import AuditContext

    context = request.scope.get("state", {}).get("audit")
    if isinstance(context, AuditContext) and patient:
        context.patients.add(patient)


def _searchset(
    base: str, rtype: str, params: list[tuple[str, str]], resources: list[dict[str, Any]]
) -> dict[str, Any]:
    query = urlencode(params)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "self", "url": f"{base}/{rtype}" + (f"?{query}" if query else "")}],
    }
    if resources:
        bundle["entry"] = [
            {
                "fullUrl": f"{base}/{rtype}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ]
    return bundle
