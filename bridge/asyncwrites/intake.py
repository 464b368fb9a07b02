"""What an asynchronous write must pass before it is accepted (202), and its lanes.

A write is checked as far as can be done without sending it: the resource
validates, its legacy record can be made (a transaction's every create), the
token allows every entry. What the legacy system alone can refuse is the final
result of the job instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.errors import FhirError, InvalidRequest, UnprocessableEntity
from bridge.fhir.compartment import patient_compartment
from bridge.fhir.validate import validate_resource
from bridge.gateway import Gateway
from bridge.gateway.bundles import parse_entry
from bridge.mapping.runner import BadValue
from bridge.mapping.writer import legacy_record

__all__ = [
    "WriteEntry",
    "check_create",
    "check_entries",
    "check_update",
    "lanes",
    "wants_async",
    "write_entries",
]

MAX_ENTRIES = 500
_INTERACTIONS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}


def wants_async(prefer: str | None) -> bool:
    """`Prefer: respond-async` (RFC 7240: one preference among others, any case)."""
    if not prefer:
        return False
    return any(p.split(";")[0].strip().lower() == "respond-async" for p in prefer.split(","))


@dataclass(frozen=True)
class WriteEntry:
    index: int
    method: str
    interaction: str
    rtype: str
    rid: str | None
    resource: Any
    conditional: bool  # ifNoneExist or ifMatch
    if_none_exist: bool = False  # a conditional create: its condition is a search


def write_entries(body: Any) -> list[WriteEntry]:
    """The entries of a batch or transaction Bundle accepted asynchronously (writes only)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise InvalidRequest("POST to the base takes a Bundle of type batch or transaction.")
    if body.get("type") not in ("batch", "transaction"):
        raise InvalidRequest("The Bundle's type must be batch or transaction.")
    raw = body.get("entry") or []
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("Bundle.entry must be a list of entries.")
    if len(raw) > MAX_ENTRIES:
        raise UnprocessableEntity(f"A Bundle may hold at most {MAX_ENTRIES} entries.")
    out = []
    for index, item in enumerate(raw):
        request = item.get("request") if isinstance(item, dict) else None
        if not isinstance(request, dict):
            raise InvalidRequest(f"Bundle.entry[{index}].request is required.")
        method = str(request.get("method", "")).upper()
        if method not in _INTERACTIONS:
            raise InvalidRequest(
                f"Bundle.entry[{index}]: with Prefer: respond-async a Bundle may hold writes "
                "only (POST, PUT, PATCH, DELETE); send reads and searches on their own."
            )
        entry = parse_entry(index, item)  # the url read as a synchronous Bundle reads it
        if (method == "POST") != (entry.rid is None):
            raise InvalidRequest(f"Bundle.entry[{index}].request.url does not fit {method}.")
        out.append(
            WriteEntry(
                index=index,
                method=method,
                interaction=_INTERACTIONS[method],
                rtype=entry.rtype,
                rid=entry.rid,
                resource=item.get("resource"),
                conditional=bool(entry.headers),
                if_none_exist="if-none-exist" in entry.headers,
            )
        )
    return out


def check_create(gateway: Gateway, rtype: str, body: Any, where: str = "") -> None:
    """A create's resource validates and makes a legacy record (400/422 else)."""
    try:
        resource = validate_resource(body, rtype)
        stripped = {k: v for k, v in resource.items() if k not in ("id", "meta")}
        legacy_record(gateway.route(rtype, "create").resource, stripped)
    except BadValue as exc:
        raise UnprocessableEntity(f"{where}{rtype}.{exc}") from None
    except FhirError as error:
        if not where:
            raise
        raise type(error)(f"{where}{error.diagnostics}") from None


def check_update(gateway: Gateway, rtype: str, rid: str, body: Any) -> None:
    gateway.check_id(rid)
    resource = validate_resource(body, rtype)
    if resource.get("id") != rid:
        raise InvalidRequest("The resource's id must equal the id in the URL.")


def check_entries(gateway: Gateway, body: dict[str, Any], entries: list[WriteEntry]) -> None:
    """A transaction fails whole on a bad entry: find it now. (A batch answers per entry.)"""
    if body.get("type") != "transaction":
        return
    for entry in entries:
        where = f"Bundle.entry[{entry.index}]: "
        if entry.interaction == "create":
            check_create(gateway, entry.rtype, entry.resource, where)
        elif entry.method == "PUT":
            try:
                validate_resource(entry.resource, entry.rtype)
            except FhirError as error:
                raise type(error)(f"{where}{error.diagnostics}") from None


def lanes(items: list[tuple[str, str | None, Any]]) -> list[str]:
    """The lanes of a job's writes, as (type, id, resource): each patient the
    writes are for (`Patient/<id>`); else the resource written, else its type."""
    compartment = patient_compartment()
    found: set[str] = set()
    for rtype, rid, resource in items:
        owners = compartment.owners(resource) if isinstance(resource, dict) else set()
        if owners:
            found.update(f"Patient/{owner}"[:256] for owner in owners)
        elif rid is not None:
            found.add(f"{rtype}/{rid}"[:256])
        else:
            found.add(rtype[:256])
    return sorted(found)
