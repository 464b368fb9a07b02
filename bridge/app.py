"""create_app(settings): the one place that wires middleware, routes and lifespan."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from bridge.asyncwrites import (
    AsyncWrites,
    Deliveries,
    JobQueue,
    async_routes,
    check_create,
    check_entries,
    check_update,
    note_attempt_call,
    wants_async,
    write_entries,
)
from bridge.audit import (
    AuditMiddleware,
    AuditTrail,
    DeliveryAudit,
    not_coming,
    note_legacy,
    note_patients,
    note_withheld,
)
from bridge.auth.access import Access, access
from bridge.auth.factory import create_verifier
from bridge.auth.middleware import AuthMiddleware
from bridge.auth.tokens import Principal, TokenVerifier
from bridge.errors import (
    FhirError,
    Forbidden,
    InvalidRequest,
    MappingError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Problem,
    ServiceUnavailable,
    UnknownResourceType,
    UnsupportedMediaType,
)
from bridge.fhir.jsondepth import check_json_depth
from bridge.fhir.negotiate import FHIR_JSON, check_acceptable, check_body_version
from bridge.fhir.outcome import operation_outcome
from bridge.fhir.paging import PageTokens
from bridge.fhir.response import FhirResponse
from bridge.fhir.validate import prepare as prepare_validators
from bridge.gateway import Gateway, WriteResult
from bridge.gateway.bundles import parse_entry
from bridge.gateway.searching import SearchScope
from bridge.idempotency import Idempotency, owner_of
from bridge.local import LOCAL_TYPES, local_capabilities, local_routes
from bridge.mapping.compiled import CompiledSystem
from bridge.mapping.compiler import compile_system
from bridge.metrics import Metrics, MetricsMiddleware
from bridge.middleware import (
    AccessLogMiddleware,
    LimitsMiddleware,
    RateLimitMiddleware,
    RequestIdMiddleware,
)
from bridge.privacy import Privacy
from bridge.reload import MappingReloader
from bridge.routing import App, IndexedRouter, route, same_without_slash
from bridge.settings import Settings, environment
from bridge.soap.backend import Backend
from bridge.soap.tls import ClientTls
from bridge.store import Store, StoreUnavailable
from bridge.store.budget import SessionBudget
from bridge.urls import http_url

__all__ = ["FhirResponse", "GatewayHolder", "create_app", "create_gateway", "worker_app"]

log = logging.getLogger("bridge.app")


def _outcome_response(error: FhirError) -> FhirResponse:
    body = operation_outcome(error.code, error.diagnostics, expression=error.expression)
    return FhirResponse(body, error.status, error.headers)


async def _fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return _outcome_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        return _outcome_response(
            MethodNotAllowed(
                f"{request.method} is not supported at this address; it takes "
                f"{', '.join(allowed)}.",
                headers={"Allow": ", ".join(allowed)},
            )
        )
    if exc.status_code == 404:
        return _outcome_response(NotFound("There is nothing at this address."))
    error = FhirError(str(exc.detail) if exc.detail else None)
    error.status = exc.status_code
    error.code = "invalid" if exc.status_code < 500 else "exception"
    return _outcome_response(error)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at the request's path (a 405's `Allow`, which
    RFC 9110 requires), not only the first route's that Starlette names."""
    methods: set[str] = set()
    scope = {**request.scope, "method": "\x00"}  # no route takes it: each that fits is PARTIAL
    for candidate in request.app.router.routes:
        if isinstance(candidate, Route) and candidate.matches(scope)[0] is not Match.NONE:
            methods.update(candidate.methods or ())
    return sorted(methods)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Never a stack trace or a message (it may hold PHI): only the type, with the id.
    log.error(
        "unexpected %s in request %s",
        type(exc).__name__,
        request.scope.get("state", {}).get("request_id", "-"),
    )
    return _outcome_response(FhirError("The server met an unexpected condition."))


def _param(request: Request, name: str) -> str | None:
    """A query parameter; most requests (reads) have no query string to parse."""
    return request.query_params.get(name) if request.scope.get("query_string") else None


def _wants_pretty(request: Request) -> bool:
    return _param(request, "_pretty") == "true"


def _negotiate(request: Request) -> None:
    check_acceptable(request.headers.get("accept"), _param(request, "_format"))


def _preference(request: Request, wanted: str) -> str | None:
    """The value the `Prefer` header gives `wanted` (`return`: minimal, representation
    or operationoutcome; `handling`: strict or lenient), lower-cased, or None."""
    prefer = request.headers.get("prefer")
    if not prefer:
        return None
    for part in prefer.split(","):
        name, _, value = part.split(";")[0].partition("=")
        if name.strip().lower() == wanted:
            return value.strip().strip('"').lower()
    return None


# The methods that serve each interaction at an instance's or a type's address.
_INSTANCE_METHODS = {"read": ("GET", "HEAD"), "update": ("PATCH", "PUT"), "delete": ("DELETE",)}
_TYPE_METHODS = {"search": ("GET", "HEAD"), "create": ("POST",)}


def _no_history(rtype: str | None = None, rid: str | None = None) -> NotFound:
    about = f"; read {rtype}/{rid} for its current state" if rtype and rid else ""
    error = NotFound(
        "This server keeps no versions of resources: history and version reads "
        f"(_history) are not supported{about}."
    )
    error.code = "not-supported"
    return error


def _refused(gw: Gateway, rtype: str, interaction: str, error: FhirError) -> FhirError:
    """A refused interaction (unknown type, or not served), made as helpful as it can be:
    a type named in the wrong case says which is meant; a 405 says which methods its
    address takes (`Allow`, as RFC 9110 requires)."""
    if isinstance(error, UnknownResourceType):
        if rtype == "_history":
            return _no_history()
        types = sorted({*gw.routes, *LOCAL_TYPES})
        meant = next((t for t in types if t.lower() == rtype.lower()), None)
        if meant is not None:
            return UnknownResourceType(
                f"This server does not serve '{rtype}' resources; resource type names are "
                f"case-sensitive: did you mean '{meant}'?"
            )
        return UnknownResourceType(
            f"This server does not serve '{rtype}' resources; it serves {', '.join(types)} "
            "([base]/metadata says what each allows)."
        )
    level = _INSTANCE_METHODS if interaction in _INSTANCE_METHODS else _TYPE_METHODS
    served = gw.routes.get(rtype, {})
    error.headers["Allow"] = ", ".join(
        sorted(m for i, methods in level.items() if i in served for m in methods)
    )
    return error


def _strict(request: Request) -> bool:
    return _preference(request, "handling") == "strict"


def checked_systems(settings: Settings) -> list[CompiledSystem]:
    """Compile and check as `bridge check` does: start-up and hot reload accept nothing less.

    The value-set and sample checks add ~5 ms to the compile (~300 ms) over the
    repository's mappings: they run once per start and per reload."""
    from bridge.tools.golden import check_samples
    from bridge.tools.valuesets import check_value_sets

    systems = compile_systems(settings)
    problems = [p for s in systems for p in (*check_value_sets(s), *check_samples(s))]
    if problems:
        raise MappingError(problems)
    return systems


def compile_systems(settings: Settings) -> list[CompiledSystem]:
    env = environment()
    systems = []
    for ref in settings.systems:
        system = compile_system(
            ref.path, env, endpoint=ref.endpoint, wsdl_cache=settings.wsdl_cache_dir
        )
        if ref.origin:
            path = urlsplit(system.endpoint).path
            system = dataclasses.replace(system, endpoint=ref.origin.rstrip("/") + path)
        if not http_url(system.endpoint):
            # A path alone is for an origin to complete; without one every request
            # would answer 503 and never say why.
            message = (
                f"endpoint '{system.endpoint}' has no scheme and host; give the full URL "
                "(https://ehr.example.org/soap), or this system's origin in the gateway "
                "config (systems: [{path: ..., origin: https://ehr.example.org}])"
            )
            raise MappingError([Problem(*system.endpoint_at, message)])
        if ref.tls is not None:
            tls = ClientTls(
                *(
                    str(p) if p is not None else None
                    for p in (ref.tls.ca_file, ref.tls.cert, ref.tls.key)
                )
            )
            system = dataclasses.replace(system, tls=tls)
        systems.append(system)
    return systems


def create_gateway(
    settings: Settings,
    systems: list[CompiledSystem] | None = None,
    reuse: dict[str, Backend] | None = None,
    page_tokens: PageTokens | None = None,
) -> Gateway:
    if systems is None:
        systems = checked_systems(settings)
    if page_tokens is not None:
        key = b""
    elif settings.paging_key is not None:
        key = settings.paging_key.get_secret_value().encode()
    else:
        key = secrets.token_bytes(32)
        log.warning(
            "no paging key configured: paging links will not survive a restart or work "
            "across replicas; set BRIDGE_PAGING_KEY"
        )
    # Each process may open up to a system's max_sessions; the session budget in
    # the store (attached at start-up) keeps every worker and replica together
    # within it.
    return Gateway(
        systems,
        page_tokens=page_tokens or PageTokens(key, settings.page_ttl),
        reuse=reuse,
        default_count=settings.limits.default_count,
        max_count=settings.limits.max_count,
        started=datetime.now(UTC).isoformat(timespec="seconds"),
    )


class GatewayHolder:
    """The gateway serving new requests; hot reload replaces it atomically."""

    def __init__(self, gateway: Gateway) -> None:
        self.current = gateway
        self._retired: list[Gateway] = []
        self.on_swap: Callable[[Gateway], None] | None = None

    def swap(self, gateway: Gateway) -> Gateway:
        if self.on_swap is not None:
            self.on_swap(gateway)
        old, self.current = self.current, gateway
        self._retired.append(old)
        return old

    async def close(self) -> None:
        closed: set[int] = set()
        for gateway in [self.current, *self._retired]:
            for backend in gateway.backends.values():
                if id(backend) not in closed:
                    closed.add(id(backend))
                    await backend.close()


_LETTERS = {"read": "r", "search": "s", "create": "c", "update": "u", "delete": "d"}


def _included(entry: dict[str, Any]) -> bool:
    """Whether a searchset's entry is an `_include`d resource, not a match."""
    return bool(entry.get("search", {}).get("mode") == "include")


def _matches(entries: list[dict[str, Any]]) -> int:
    """How many of a searchset's entries are matches (not `_include`d resources)."""
    return sum(1 for e in entries if not _included(e))


def _principal(request: Request) -> Principal | None:
    principal = request.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else None


def create_app(
    settings: Settings, gateway: Gateway | None = None, verifier: TokenVerifier | None = None
) -> Starlette:
    holder = GatewayHolder(gateway or create_gateway(settings))

    def gw_of(request: Request) -> Gateway:
        # One gateway per request: a hot reload swaps `holder.current`, and a
        # request in flight finishes on the mapping it started with.
        state = request.scope.setdefault("state", {})
        gateway_now = state.get("gateway")
        if gateway_now is None:
            gateway_now = state["gateway"] = holder.current
        assert isinstance(gateway_now, Gateway)
        return gateway_now

    token_verifier = verifier if verifier is not None else create_verifier(settings)
    # The gateway's store and what lives in it; opened by the lifespan.
    runtime: dict[str, Any] = {"store": None, "privacy": None, "trail": None, "budget": None}

    def privacy() -> Privacy | None:
        return runtime["privacy"]  # type: ignore[no-any-return]

    def trail() -> AuditTrail | None:
        return runtime["trail"]  # type: ignore[no-any-return]

    async def guard(principal: Principal) -> None:
        current = privacy()
        if current is not None:
            await current.guard(principal)

    def withheld(request: Request, resource: dict[str, Any]) -> bool:
        """True when a patient's Consent denies `resource` to the calling app."""
        current = privacy()
        principal = _principal(request)
        if current is None or principal is None:
            return False
        consent_id = current.withheld_by(principal.client_id, resource)
        if consent_id is None:
            return False
        state = request.scope.setdefault("state", {})
        note_withheld(state, consent_id)
        note_patients(state, (resource,))  # the trail says whose data was withheld
        return True

    def base(request: Request) -> str:
        if settings.base_url:
            return settings.base_url.rstrip("/")
        return f"{request.url.scheme}://{request.url.netloc}/fhir"

    async def metadata(request: Request) -> Response:
        _negotiate(request)
        statement = gw_of(request).capability(base(request), security())
        if trail() is not None:
            for rest in statement.get("rest", []):
                rest["resource"] = sorted(
                    [*rest.get("resource", []), *local_capabilities()], key=lambda r: r["type"]
                )
        return FhirResponse(statement, pretty=_wants_pretty(request))

    async def operation(request: Request, rid: str | None, name: str) -> Response:
        rtype = request.path_params["rtype"]
        gw = gw_of(request)
        try:
            op = gw.operation_spec(rtype, name, rid)
        except UnknownResourceType as error:
            raise _refused(gw, rtype, "read", error) from None
        except MethodNotAllowed as error:
            error.headers["Allow"] = ""  # nothing is served at this address
            raise
        # An operation needs the token's right to read (or, if it changes data, update) the type.
        allowed = rules(request, rtype, "u" if op.changes else "r")
        if allowed is not None and not allowed.unlimited:
            # A patient-confined or restricted token: only on a resource it may read.
            if rid is None:
                raise Forbidden(
                    f"This access token may run {rtype} operations only on a {rtype} it may "
                    "read, not on the whole type."
                )
            if "read" not in gw.routes.get(rtype, {}):
                raise Forbidden(
                    f"A patient-scoped token cannot run operations on {rtype} resources the "
                    "gateway cannot read back."
                )
            allowed.check(await gw.read(rtype, rid))
        body = await json_body(request) if request.method == "POST" else None
        items = list(request.query_params.multi_items())
        answer = await gw.operation(rtype, name, rid, items, body)
        return FhirResponse(answer, pretty=_wants_pretty(request))

    async def instance_operation(request: Request) -> Response:
        _negotiate(request)
        name = request.path_params["op"]
        if not name.startswith("$"):
            if name == "_history":
                return await version_read(request)
            raise NotFound("There is nothing at this address.")
        return await operation(request, request.path_params["rid"], name[1:])

    async def type_operation(request: Request) -> Response:
        _negotiate(request)
        name = request.path_params["rid"]
        if not name.startswith("$"):
            rtype = request.path_params["rtype"]
            refused = MethodNotAllowed("POST goes to [type] (create) or [type]/$operation.")
            raise _refused(gw_of(request), rtype, "read", refused)
        return await operation(request, None, name[1:])

    async def version_read(request: Request) -> Response:
        """`_history` of an instance, or one of its versions: the legacy systems keep none."""
        rtype, rid = request.path_params["rtype"], request.path_params["rid"]
        permit(request, rtype, "read")
        raise _no_history(rtype, rid)

    async def read(request: Request) -> Response:
        _negotiate(request)
        rtype = request.path_params["rtype"]
        rid = request.path_params["rid"]
        if rid[0] in "$_":  # no id starts so
            if rid == "_history":
                permit(request, rtype, "search")
                raise _no_history()
            if rid == "_search":
                permit(request, rtype, "search")
                raise MethodNotAllowed(
                    f"{rtype}/_search takes POST with a form body; GET {rtype}?... searches too.",
                    headers={"Allow": "POST"},
                )
            if rid[0] == "$":
                return await type_operation(request)
        permit(request, rtype, "read")
        resource = await gw_of(request).read(rtype, rid)
        readable(request, rtype, resource)
        note_patients(request.scope["state"], (resource,))
        return FhirResponse(resource, pretty=_wants_pretty(request))

    def rules(request: Request, rtype: str, interaction: str) -> Access | None:
        """The token's rules for `interaction` on `rtype` (403 when it has none)."""
        return access(_principal(request), rtype, _LETTERS.get(interaction, interaction))

    def readable(request: Request, rtype: str, resource: dict[str, Any]) -> None:
        """403 unless the token's scopes (patient compartment, granular restrictions)
        and the patient's Consent let the caller read `resource`."""
        allowed = rules(request, rtype, "read")
        if allowed is not None and not allowed.unlimited:
            allowed.check(resource)
        if withheld(request, resource):
            raise Forbidden("The patient has not consented to share this with this app.")

    def permit(request: Request, rtype: str, interaction: str) -> bool:
        """405 for an interaction nobody serves, then the token's scopes (403).

        True when each resource needs checking against the token's rules (a patient
        compartment, a granular scope's restriction)."""
        gw = gw_of(request)
        try:
            gw.route(rtype, interaction)
        except (UnknownResourceType, MethodNotAllowed) as error:
            raise _refused(gw, rtype, interaction, error) from None
        allowed = rules(request, rtype, interaction)
        return allowed is not None and not allowed.unlimited

    def may_search_for(request: Request, rtype: str) -> None:
        """A conditional create's condition: the token must be allowed to search (403)."""
        try:
            permit(request, rtype, "search")
        except Forbidden:
            raise Forbidden(
                f"If-None-Exist runs a search: this access token needs search (s) on {rtype}."
            ) from None

    def confine(request: Request, rtype: str, bundle: dict[str, Any]) -> dict[str, Any]:
        allowed = rules(request, rtype, "search")
        patient_only = allowed is not None and not allowed.unlimited
        current = privacy()
        consents = current is not None and current.withholding
        entries = bundle.get("entry", [])
        if (
            not patient_only
            and not consents
            and all(e.get("search", {}).get("mode") != "include" for e in entries)
        ):
            # Nothing to take out (an unrestricted token, no Consent, no _include).
            note_patients(request.scope["state"], (e["resource"] for e in entries))
            return bundle
        kept = []
        for entry in entries:
            resource = entry["resource"]
            entry_rules = allowed
            if _included(entry):
                # An included resource needs the token's permission for its own type.
                try:
                    entry_rules = rules(request, resource["resourceType"], "search")
                except Forbidden:
                    continue
            if (
                entry_rules is not None
                and not entry_rules.unlimited
                and not entry_rules.allows(resource)
            ):
                continue
            if consents and withheld(request, resource):
                continue
            kept.append(entry)
        if patient_only or len(kept) != len(entries):
            # A patient scope sees its own patient's entries only, and no total
            # that would count anyone else's (or what a Consent withholds).
            bundle.pop("total", None)
        if len(kept) != len(entries) and _matches(kept) != _matches(entries):
            # The gateway pages only what `search_scope` keeps; should anything still
            # be left out here, links made from what was left out must go too.
            bundle["link"] = [x for x in bundle.get("link", []) if x.get("relation") == "self"]
        note_patients(request.scope["state"], (e["resource"] for e in kept))
        if kept:
            bundle["entry"] = kept
        else:
            bundle.pop("entry", None)
        return bundle

    def consents_concern(request: Request, rtype: str) -> bool:
        """Whether a Consent in force may withhold a `rtype` resource from the caller's app."""
        current = privacy()
        principal = _principal(request)
        return (
            current is not None
            and principal is not None
            and current.may_withhold(principal.client_id, rtype)
        )

    def search_scope(request: Request, rtype: str) -> SearchScope | None:
        """What the token (its patient, its rules on each resource) and the patients'
        Consents let the caller see of a search on `rtype`, for the gateway to apply
        before it pages: links and totals then count nothing else."""
        allowed = rules(request, rtype, "search")
        limited = allowed is not None and not allowed.unlimited
        if not limited and not consents_concern(request, rtype):
            return None

        def keep(resource: dict[str, Any]) -> bool:
            if limited and allowed is not None and not allowed.allows(resource):
                return False
            return not withheld(request, resource)

        patient = allowed.patient if limited and allowed is not None and allowed.confined else None
        return SearchScope(patient=patient, keep=keep)

    async def search_get(request: Request) -> Response:
        _negotiate(request)
        rtype = request.path_params["rtype"]
        permit(request, rtype, "search")
        scope = search_scope(request, rtype)
        token = request.query_params.get("_page")
        if token is not None:
            bundle = await gw_of(request).next_page(rtype, token, base(request), scope=scope)
        else:
            items = list(request.query_params.multi_items())
            bundle = await gw_of(request).search(
                rtype, items, base(request), strict=_strict(request), scope=scope
            )
        return FhirResponse(confine(request, rtype, bundle), pretty=_wants_pretty(request))

    async def search_post(request: Request) -> Response:
        _negotiate(request)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in ("application/x-www-form-urlencoded", ""):
            raise UnsupportedMediaType(
                "POST _search takes an application/x-www-form-urlencoded body."
            )
        body = await request.body()
        if len(body) > settings.limits.max_body_bytes:
            raise PayloadTooLarge()
        try:
            form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError as exc:
            raise InvalidRequest("The form body is not UTF-8.") from exc
        items = list(request.query_params.multi_items()) + form
        rtype = request.path_params["rtype"]
        permit(request, rtype, "search")
        bundle = await gw_of(request).search(
            rtype, items, base(request), strict=_strict(request), scope=search_scope(request, rtype)
        )
        return FhirResponse(confine(request, rtype, bundle), pretty=_wants_pretty(request))

    async def json_body(request: Request, *, patch: bool = False) -> Any:
        content_type = request.headers.get("content-type", "")
        media = content_type.split(";")[0].strip().lower()
        accepted = ("application/json-patch+json",) if patch else (FHIR_JSON, "application/json")
        if media not in accepted:
            raise UnsupportedMediaType(f"Send the body as {' or '.join(accepted)}.")
        if ";" in content_type:
            check_body_version(content_type)
        body = await request.body()
        if len(body) > settings.limits.max_body_bytes:
            raise PayloadTooLarge()
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidRequest("The body is not valid JSON.") from None
        check_json_depth(parsed, body, settings.limits.max_json_depth)
        return parsed

    def written(request: Request, result: WriteResult) -> Response:
        headers = {"Location": result.location} if result.location else {}
        if result.resource is not None:
            note_patients(request.scope["state"], (result.resource,))
        if result.resource is None:
            return Response(status_code=204, headers=headers)
        returning = _preference(request, "return")
        if returning == "minimal":
            headers["Preference-Applied"] = "return=minimal"
            return Response(status_code=result.status, headers=headers)
        if returning == "operationoutcome" and result.resource.get("resourceType") != (
            "OperationOutcome"
        ):
            headers["Preference-Applied"] = "return=OperationOutcome"
            body = operation_outcome(
                "informational", _done(request, result), severity="information"
            )
            return FhirResponse(body, result.status, headers, pretty=_wants_pretty(request))
        return FhirResponse(result.resource, result.status, headers, pretty=_wants_pretty(request))

    def _done(request: Request, result: WriteResult) -> str:
        """What a write did, for `Prefer: return=OperationOutcome`."""
        assert result.resource is not None
        what = f"{result.resource.get('resourceType')}/{result.resource.get('id')}"
        if result.status == 201:
            return f"{what} was created."
        if request.method == "POST":
            return f"{what} already exists (If-None-Exist found it); nothing was created."
        return f"{what} was updated."

    async def own_patient(
        request: Request, rtype: str, interaction: str, resource: Any, rid: str | None
    ) -> None:
        """A token confined to its patient writes only that patient's data (403 else).

        The resource sent must be in the patient's compartment, and so must the
        one it changes, read back first; what cannot be read back cannot be
        changed under a patient scope.
        """
        if not permit(request, rtype, interaction):
            return
        allowed = rules(request, rtype, interaction)
        assert allowed is not None
        if isinstance(resource, dict):
            allowed.check_write(resource)
        if rid is not None:
            if "read" not in gw_of(request).routes.get(rtype, {}):
                raise Forbidden(
                    f"A patient-scoped token cannot change {rtype} resources the gateway "
                    "cannot read back."
                )
            allowed.check(await gw_of(request).read(rtype, rid))

    async def create(request: Request) -> Response:
        _negotiate(request)
        rtype = request.path_params["rtype"]
        permit(request, rtype, "create")
        body = await json_body(request)
        await own_patient(request, rtype, "create", body, None)
        condition = request.headers.get("if-none-exist")
        scope = None
        if condition is not None:
            # The condition is a search, and a match is answered: the token must be
            # allowed to search, and finds only what it may see.
            may_search_for(request, rtype)
            scope = search_scope(request, rtype)
        # What a caller may see is known here, not at delivery: a conditional create
        # that must be kept to it runs now (a server may answer a preference so).
        if wants_async(request.headers.get("prefer")) and scope is None:
            if condition is not None:
                gw_of(request).conditional_search(rtype, condition)  # 400 now, not later
            check_create(gw_of(request), rtype, body)
            return await later(request, "create", rtype, None, body)
        result = await gw_of(request).create(
            rtype, body, base(request), if_none_exist=condition, scope=scope
        )
        return written(request, result)

    async def update(request: Request) -> Response:
        _negotiate(request)
        rtype, rid = request.path_params["rtype"], request.path_params["rid"]
        permit(request, rtype, "update")
        if_match = request.headers.get("if-match")
        if request.method == "PATCH":
            operations = await json_body(request, patch=True)
            await own_patient(request, rtype, "update", None, rid)
            result = await gw_of(request).patch(rtype, rid, operations, if_match=if_match)
        else:
            body = await json_body(request)
            await own_patient(request, rtype, "update", body, rid)
            if wants_async(request.headers.get("prefer")):
                check_update(gw_of(request), rtype, rid, body)
                return await later(request, "update", rtype, rid, body)
            result = await gw_of(request).update(rtype, rid, body, if_match=if_match)
        return written(request, result)

    async def later(
        request: Request, kind: str, rtype: str | None, rid: str | None, body: Any
    ) -> Response:
        """Accept a checked, authorized write for asynchronous delivery (202)."""
        writes: AsyncWrites | None = runtime.get("async")
        if writes is None:
            raise ServiceUnavailable("Asynchronous writes are not available; retry shortly.")
        resources = write_entries(body) if kind == "bundle" else []
        note_patients(request.scope["state"], [e.resource for e in resources] or [body])
        return await writes.accept(request, kind, rtype, rid, body, base(request))

    def idempotent(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        """The handler, answering at most once per Idempotency-Key (bridge/idempotency.py)."""

        async def once(request: Request) -> Response:
            key = request.headers.get("idempotency-key")
            keeper: Idempotency | None = runtime.get("idempotency")
            if key is None or keeper is None:
                return await handler(request)  # type: ignore[no-any-return]
            # Keyed by the whole caller, not the app alone: the replay comes before any
            # scope check, so another user or patient of the app must never reach it.
            principal = _principal(request)
            return await keeper.run(
                request,
                owner_of(principal),
                key,
                handler,
                _outcome_response,
                settings.limits.max_body_bytes,
                earlier=(principal.client_id if principal is not None else None) or "-",
            )

        return once

    async def delete(request: Request) -> Response:
        _negotiate(request)
        rtype, rid = request.path_params["rtype"], request.path_params["rid"]
        permit(request, rtype, "delete")
        await own_patient(request, rtype, "delete", None, rid)
        await gw_of(request).delete(rtype, rid)
        return Response(status_code=204)

    # A Bundle holds up to max_body_bytes of parsed entries while it runs: a few at a
    # time per worker keep memory bounded; the others wait, their bodies unread.
    def taking_turns(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def in_turn(request: Request) -> Response:
            bundle_turns: asyncio.Semaphore | None = runtime.get("bundle_turns")
            if bundle_turns is None:  # an app served without its lifespan (tests)
                bundle_turns = runtime["bundle_turns"] = asyncio.Semaphore(
                    settings.limits.max_concurrent_bundles
                )
            try:
                async with asyncio.timeout(settings.limits.bundle_wait):
                    with not_coming(trail(), request.scope.get("state", {})):
                        await bundle_turns.acquire()
            except TimeoutError:
                raise ServiceUnavailable(
                    "Too many Bundles are being processed; retry later.", retry_after=5
                ) from None
            try:
                return await handler(request)  # type: ignore[no-any-return]
            finally:
                bundle_turns.release()

        return in_turn

    async def bundle(request: Request) -> Response:
        _negotiate(request)
        body = await json_body(request)
        # (type, interaction) -> whether entries need the token's per-resource rules.
        checked: dict[tuple[str, str], bool] = {}

        async def allow(rtype: str, interaction: str, resource: Any, rid: str | None) -> None:
            # Each entry is authorized as if it came alone.
            try:
                if interaction == "if-none-exist":  # a conditional create's search
                    may_search_for(request, rtype)
                    return
                limited = checked.get((rtype, interaction))
                if limited is None:
                    limited = checked[(rtype, interaction)] = permit(request, rtype, interaction)
            except MethodNotAllowed as error:
                error.headers["Allow"] = "POST"  # the Bundle's address takes POST
                raise
            if limited and interaction in ("create", "update", "delete"):
                await own_patient(request, rtype, interaction, resource, rid)

        if wants_async(request.headers.get("prefer")):
            entries = write_entries(body)
            for entry in entries:
                await allow(entry.rtype, entry.interaction, entry.resource, entry.rid)
            # A conditional create's search must be kept to what the caller may see,
            # known here and not at delivery: such a Bundle runs now.
            conditions = [e.rtype for e in entries if e.interaction == "create" and e.if_none_exist]
            for rtype in conditions:
                may_search_for(request, rtype)
            if not any(search_scope(request, rtype) is not None for rtype in conditions):
                check_entries(gw_of(request), body, entries)
                return await later(request, "bundle", None, None, body)

        async def vet(rtype: str, rid: str) -> None:
            # A transaction's read of what the token may not see is refused before its
            # writes: read it first, where the token's rules or a Consent may refuse it.
            allowed = rules(request, rtype, "read")
            if (allowed is not None and not allowed.unlimited) or consents_concern(request, rtype):
                readable(request, rtype, await gw_of(request).read(rtype, rid))

        result = await gw_of(request).bundle(
            body, base(request), allow, lambda rtype: search_scope(request, rtype), vet
        )
        confine_entries(request, body, result)
        return FhirResponse(result, pretty=_wants_pretty(request))

    def confine_entries(request: Request, body: Any, result: dict[str, Any]) -> None:
        """What read and search entries answer follows the rules of a lone read or search.

        It only takes out: every entry was checked (its shape, the token's scopes)
        before any ran, and the writes are done by now, so nothing here fails the
        Bundle. Entries are read by `parse_entry`, as the gateway read them."""
        asked = body.get("entry") if isinstance(body, dict) else None
        answers = result.get("entry")
        if not isinstance(answers, list):
            return
        if not isinstance(asked, list) or len(asked) != len(answers):
            # Answers that cannot be matched to their requests are not let out.
            for answer in answers:
                if isinstance(answer, dict):
                    answer.pop("resource", None)
            return
        for index, (entry, answer) in enumerate(zip(asked, answers, strict=True)):
            resource = answer.get("resource") if isinstance(answer, dict) else None
            if not isinstance(resource, dict):
                continue
            try:
                parsed = parse_entry(index, entry)
            except FhirError:
                answer.pop("resource", None)  # its answer is that error, never a resource
                continue
            try:
                if parsed.interaction == "search" and resource.get("resourceType") == "Bundle":
                    confine(request, parsed.rtype, resource)
                elif parsed.interaction == "read":
                    readable(request, str(resource.get("resourceType")), resource)
            except Forbidden as error:
                answers[index] = {
                    "response": {
                        "status": str(error.status),
                        "outcome": operation_outcome(error.code, error.diagnostics),
                    }
                }

    async def metrics_page(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def smart_configuration() -> dict[str, Any]:
        auth = settings.auth
        config: dict[str, Any] = {
            "issuer": auth.issuer,
            "jwks_uri": auth.jwks_url,
            "authorization_endpoint": auth.authorization_endpoint,
            "token_endpoint": auth.token_endpoint,
            "revocation_endpoint": auth.revocation_endpoint,
            "introspection_endpoint": auth.introspection_endpoint,
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "scopes_supported": auth.scopes_supported,
            "response_types_supported": ["code"],
            "capabilities": [
                "launch-standalone",
                "client-public",
                "client-confidential-symmetric",
                "client-confidential-asymmetric",
                "context-standalone-patient",
                "permission-patient",
                "permission-user",
                "permission-v1",
                "permission-v2",
            ],
            "code_challenge_methods_supported": ["S256"],
        }
        return {k: v for k, v in config.items() if v is not None}

    async def smart(request: Request) -> Response:
        return FhirResponse(smart_configuration(), media_type="application/json")

    def security() -> dict[str, Any] | None:
        auth = settings.auth
        if auth.mode == "off":
            return None
        uris = [
            {"url": name, "valueUri": value}
            for name, value in (
                ("authorize", auth.authorization_endpoint),
                ("token", auth.token_endpoint),
                ("revoke", auth.revocation_endpoint),
                ("introspect", auth.introspection_endpoint),
            )
            if value
        ]
        out: dict[str, Any] = {
            "service": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                            "code": "SMART-on-FHIR",
                        }
                    ]
                }
            ],
            "description": "OAuth 2.0 bearer tokens with SMART on FHIR scopes (v1 and v2).",
        }
        if settings.cors_origins:
            out["cors"] = True
        if uris:
            out["extension"] = [
                {
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": uris,
                }
            ]
        return out

    async def healthz(request: Request) -> Response:
        return FhirResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        gateway = holder.current
        store = runtime["store"]
        reachable = store is not None and await store.ping()
        body: dict[str, Any] = {
            "status": "ready" if reachable else "unavailable",
            "resources": sorted(gateway.routes),
            "store": "reachable" if reachable else "unreachable",
            "breakers": {name: b.breaker.state for name, b in gateway.backends.items()},
        }
        watching: MappingReloader | None = getattr(request.app.state, "reloader", None)
        if watching is not None:
            # A refused edit leaves the previous mapping serving: still ready.
            body["mappings"] = watching.state()
        return FhirResponse(
            body,
            200 if reachable else 503,
            media_type="application/json",
        )

    routes = [
        *local_routes(
            privacy=privacy,
            trail=trail,
            admin_token=(settings.admin.token.get_secret_value() if settings.admin.token else None),
            base=base,
            max_body=settings.limits.max_body_bytes,
            max_json_depth=settings.limits.max_json_depth,
        ),
        route("/fhir/metadata", metadata, methods=["GET"]),
        route("/fhir/.well-known/smart-configuration", smart, methods=["GET"]),
        *async_routes(lambda: runtime.get("async")),
        route("/fhir", taking_turns(idempotent(bundle)), methods=["POST"]),
        route("/fhir/", taking_turns(idempotent(bundle)), methods=["POST"]),
        route("/fhir/{rtype}/_search", search_post, methods=["POST"]),
        route("/fhir/{rtype}/{rid}/{op}", instance_operation, methods=["GET", "POST"]),
        route("/fhir/{rtype}/{rid}/_history/{vid}", version_read, methods=["GET"]),
        route("/fhir/{rtype}/{rid}", read, methods=["GET"]),
        route("/fhir/{rtype}/{rid}", idempotent(update), methods=["PUT", "PATCH"]),
        route("/fhir/{rtype}/{rid}", delete, methods=["DELETE"]),
        route("/fhir/{rtype}/{rid}", type_operation, methods=["POST"]),
        route("/fhir/{rtype}", search_get, methods=["GET"]),
        route("/fhir/{rtype}", idempotent(create), methods=["POST"]),
        route("/healthz", healthz, methods=["GET"]),
        route("/metrics", metrics_page, methods=["GET"]),
        route("/readyz", readyz, methods=["GET"]),
    ]

    metrics = Metrics(lambda: list(holder.current.backends.values()))

    def served(rtype: str) -> bool:
        """A resource type the gateway serves now (a metrics label; others are "-")."""
        return rtype in holder.current.routes or rtype in LOCAL_TYPES

    def observe_backends(gateway: Gateway) -> None:
        for backend in gateway.backends.values():
            name = backend.name

            def observe(op: str, outcome: str, seconds: float, name: str = name) -> None:
                metrics.legacy_call(name, op, outcome, seconds)
                note_legacy(name, op)
                note_attempt_call(op, outcome)

            backend.observe = observe
            if runtime["budget"] is not None:
                backend.attach_budget(runtime["budget"])

    observe_backends(holder.current)
    holder.on_swap = observe_backends

    # Order, outermost first: request id, access log, metrics, audit, limits,
    # authentication, rate limit. The request id layer stays outside the access log
    # and the metrics, with nothing between them: its `send` notes the answer's
    # status for both (bridge/middleware/status.py).
    # Each route then authorizes its own interaction against the token's scopes.
    middleware = [
        *(
            [
                Middleware(
                    CORSMiddleware,
                    allow_origins=settings.cors_origins,
                    allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
                    allow_headers=[
                        "Authorization",
                        "Content-Type",
                        "If-Match",
                        "If-None-Exist",
                        "Prefer",
                        "Idempotency-Key",
                    ],
                    expose_headers=[
                        "Location",
                        "ETag",
                        "X-Request-ID",
                        "Content-Location",
                        "Retry-After",
                        "X-Progress",
                        "Idempotent-Replayed",
                        "Preference-Applied",
                        "WWW-Authenticate",
                        "Allow",
                    ],
                )
            ]
            if settings.cors_origins
            else []
        ),
        Middleware(RequestIdMiddleware),
        Middleware(AccessLogMiddleware),
        Middleware(MetricsMiddleware, metrics=metrics, served=served),
        # Outside limits and authentication: refused requests are audited too.
        Middleware(AuditMiddleware, trail=trail, render=_outcome_response),
        Middleware(LimitsMiddleware, limits=settings.limits, render=_outcome_response),
        Middleware(AuthMiddleware, verifier=token_verifier, render=_outcome_response, guard=guard),
        # Inside authentication: a client is its token's client_id once authenticated.
        Middleware(
            RateLimitMiddleware,
            rate=settings.limits.rate_per_second,
            burst=settings.limits.rate_burst,
            max_clients=settings.limits.rate_max_clients,
            render=_outcome_response,
        ),
    ]

    reloader: MappingReloader | None = None
    if settings.reload_mappings:
        reloader = MappingReloader(
            holder,
            [ref.path for ref in settings.systems]
            + sorted({s.wsdl.path.parent for s in holder.current.systems}),
            lambda: checked_systems(settings),
            lambda systems, backends: create_gateway(
                settings, systems, backends, holder.current.page_tokens
            ),
        )

    async def purge(queue: JobQueue, keys: Idempotency) -> None:
        """Forget expired Idempotency-Keys and old results of asynchronous writes."""
        while True:
            await asyncio.sleep(settings.async_writes.purge_interval)
            try:
                await keys.purge()
                await queue.purge(time.time() - settings.async_writes.keep_results)
            except StoreUnavailable:
                log.warning("expired keys and old results could not be purged; trying later")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await Store.open(settings.store.url)
        runtime["store"] = store
        runtime["privacy"] = Privacy(store, settings.store.poll_interval)
        await runtime["privacy"].start()
        runtime["bundle_turns"] = asyncio.Semaphore(settings.limits.max_concurrent_bundles)
        runtime["trail"] = AuditTrail(
            store, settings.audit.sink_url, group_commit=settings.audit.group_commit
        )
        runtime["trail"].start()
        runtime["budget"] = SessionBudget(store, ttl=settings.store.session_lease_ttl)
        runtime["budget"].start()
        observe_backends(holder.current)  # now with the budget
        runtime["idempotency"] = Idempotency(
            store,
            settings.idempotency.ttl,
            settings.idempotency.wait,
            settings.idempotency.pending_timeout,
        )
        owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        queue = JobQueue(store, owner, settings.async_writes.lease)
        deliveries = Deliveries(
            queue,
            lambda: holder.current,
            settings.async_writes,
            metrics.async_queue,
            DeliveryAudit(trail),
        )
        runtime["async"] = AsyncWrites(queue, deliveries)
        deliveries.start()
        purger = asyncio.create_task(purge(queue, runtime["idempotency"]), name="purge")
        sharer = asyncio.create_task(metrics.share(), name="metrics-share")
        watcher = asyncio.create_task(reloader.watch()) if reloader is not None else None
        # Every type the gateway writes gets its validator before the first request.
        prepare_validators(
            rtype
            for rtype, served in holder.current.routes.items()
            if "create" in served or "update" in served
        )
        _settle_heap()
        try:
            yield
        finally:
            # No new deliveries; one under way finishes or goes back to the queue.
            purger.cancel()
            sharer.cancel()
            await deliveries.close()
            await runtime["trail"].close()  # every AuditEvent accepted is written
            await runtime["privacy"].close()
            if reloader is not None and watcher is not None:
                reloader.stop()
                await asyncio.gather(watcher, return_exceptions=True)
            await holder.close()  # logs every legacy session out
            await runtime["budget"].close()  # gives back every session slot
            await store.close()
            metrics.flush()  # with workers: the last tallies reach the shared files

    app = App(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            FhirError: _fhir_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    # The same routes, tried only where a path can match them (bridge/routing.py).
    app.router = IndexedRouter(routes=routes, lifespan=lifespan, redirect_slashes=False)
    app.router.default = same_without_slash(app.router)
    app.state.gateway = holder
    app.state.reloader = reloader
    return app


def _settle_heap() -> None:
    """What start-up built (mappings, WSDLs, libraries) lives as long as the process:
    moved out of the collector's sight, full collections stop walking it again and
    again (a page of 50: -35% CPU); young collections a little less often.

    `bridge serve` starts with the collector off (`_hold_collections`): this one
    collection frees whatever start-up left behind, and turns it back on."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(5000, 10, 10)
    gc.enable()


def _hold_collections() -> None:
    """No cyclic garbage collection until the app's lifespan settles the heap.

    Start-up builds a large heap that lives as long as the process, and the
    collector would walk it ~300 times while it grows (~11% of loading the
    mappings); the one collection at the end frees the little it leaves behind.
    """
    gc.disable()


def worker_app() -> Starlette:
    """The app of one worker process of `bridge serve --workers N`."""
    from bridge import busypoll
    from bridge.logs import configure_logging
    from bridge.settings import load_worker_settings

    _hold_collections()
    settings = load_worker_settings()
    configure_logging(settings.log_level)
    busypoll.configure(busypoll.window_for(settings.busy_poll, settings.workers))
    return create_app(settings)
