"""Writes: create (with If-None-Exist), update (with If-Match), patch and delete.

Writes never retry blindly: only while nothing of them can have reached the
legacy system (a connection never made, a session refused before any call was
answered). When the answer of a write that was sent is lost, the mapping's
lookup (or the If-None-Exist search) decides what the client hears; see
`lookups.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import jsonpatch
from jsonpointer import JsonPointerException

from bridge.errors import (
    BackendError,
    FhirError,
    InvalidRequest,
    UnprocessableEntity,
)
from bridge.fhir.validate import validate_resource
from bridge.gateway.core import FAULTS
from bridge.gateway.lookups import LOST, resolve_lost_write
from bridge.gateway.searching import SearchInteractions, SearchScope
from bridge.gateway.steps import run_steps
from bridge.mapping.compiled import CompiledWrite, RunContext
from bridge.mapping.runner import BadValue, build_resource
from bridge.mapping.writer import fhir_values, legacy_record
from bridge.soap.pool import Session

__all__ = ["PreconditionFailed", "WriteInteractions", "WriteResult"]


class PreconditionFailed(FhirError):
    status = 412
    code = "conflict"
    default_diagnostics = "The precondition of this request does not hold."


class WriteResult:
    def __init__(self, status: int, resource: dict[str, Any] | None, location: str | None) -> None:
        self.status = status
        self.resource = resource
        self.location = location


def _etag_value(if_match: str) -> str:
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


class WriteInteractions(SearchInteractions):
    async def _run_write(
        self,
        rtype: str,
        interaction: str,
        spec: CompiledWrite,
        body: dict[str, Any] | None,
        rid: str | None,
        conditional: Callable[[], Awaitable[dict[str, Any] | None]] | None = None,
        tree: dict[str, Any] | None = None,
    ) -> tuple[str | None, dict[str, Any] | None]:
        """Run a write; return the id and, with `answer`, the resource read back.

        `conditional` repeats an If-None-Exist search: it tells whether a
        create whose answer was lost happened, when no lookup is declared.
        `tree` is `body`'s legacy record when it is made already."""
        served = self.route(rtype, interaction)
        if body is not None and tree is None:
            try:
                tree = legacy_record(served.resource, body)
            except BadValue as exc:
                raise UnprocessableEntity(f"{rtype}.{exc}") from None
        ctx = RunContext(values={"id": rid} if rid else {}, record=tree)
        record = (spec.record, tree) if tree is not None else None
        answers: list[dict[str, Any]] = []

        async def work(session: Session) -> str | None:
            ctx.steps.clear()
            replies = await run_steps(served.backend, session, spec.steps, ctx, record)
            if spec.id is None:
                return rid
            holders = ctx.steps.get(spec.id_step, []) if spec.id_step else replies
            new_id = next(
                (t for reply in holders if (t := (reply.findtext(spec.id) or "").strip())), None
            )
            if new_id is None:
                raise BackendError("The legacy system accepted the write but returned no id.")
            if spec.answer is not None:
                records, match = spec.answer
                for reply in replies:
                    for found in reply.iterfind(records):
                        if (found.findtext(match) or "").strip() == new_id:
                            answers.append(build_resource(served.resource, found, ctx))
            return new_id

        deadline = served.backend.deadline()
        try:
            result: str | None = await served.backend.run(work, idempotent=False, deadline=deadline)
        except FAULTS as error:
            self.faulted(served, error)
        except LOST as lost:
            return await resolve_lost_write(
                served,
                rtype,
                interaction,
                spec,
                ctx,
                rid,
                lost,
                deadline,
                self.routes.get(rtype, {}),
                conditional,
            )
        return result, (answers[0] if answers else None)

    async def _respond(
        self,
        rtype: str,
        spec: CompiledWrite,
        body: dict[str, Any],
        rid: str,
        answer: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if spec.respond == "read" and "read" in self.routes.get(rtype, {}):
            return await self.read(rtype, rid)
        if spec.respond == "answer" and answer is not None:
            return answer
        return {**body, "id": rid}

    async def create(
        self,
        rtype: str,
        body: Any,
        base: str,
        *,
        if_none_exist: str | None = None,
        scope: SearchScope | None = None,
    ) -> WriteResult:
        """Create `body`; with `if_none_exist`, first search for it as a caller that may
        see `scope` of `rtype` would (what it may not see is not found)."""
        served = self.route(rtype, "create")
        spec = served.resource.create
        assert spec is not None
        resource = validate_resource(body, rtype)
        if if_none_exist is not None:
            existing = await self._conditional(rtype, if_none_exist, base, scope)
            if existing is not None:
                return WriteResult(200, existing, f"{base}/{rtype}/{existing['id']}")
        resource = {k: v for k, v in resource.items() if k not in ("id", "meta")}
        again = None
        if if_none_exist is not None:
            query = if_none_exist

            async def again() -> dict[str, Any] | None:
                return await self._conditional(rtype, query, base, scope)

        return await self._insert(rtype, spec, resource, base, again)

    async def _insert(
        self,
        rtype: str,
        spec: CompiledWrite,
        resource: dict[str, Any],
        base: str,
        conditional: Callable[[], Awaitable[dict[str, Any] | None]] | None = None,
        tree: dict[str, Any] | None = None,
    ) -> WriteResult:
        """The create of a validated resource (no id, no meta); `tree`, its legacy
        record if it is made already."""
        new_id, built = await self._run_write(
            rtype, "create", spec, resource, None, conditional, tree
        )
        if not new_id:
            raise BackendError("The legacy system accepted the write but returned no id.")
        self.check_id(new_id)
        answer = await self._respond(rtype, spec, resource, new_id, built)
        return WriteResult(201, answer, f"{base}/{rtype}/{new_id}")

    def conditional_search(
        self, rtype: str, query: str, scope: SearchScope | None = None
    ) -> list[tuple[str, str]]:
        """An If-None-Exist search, checked (400) and, for a caller confined to a
        patient, checked against `scope` (403 for another patient's) before any call."""
        spec = self.route(rtype, "create").resource.create
        assert spec is not None
        items = parse_qsl(query.lstrip("?"), keep_blank_values=True)
        if not items:
            raise InvalidRequest("If-None-Exist needs a search, like identifier=system|value.")
        allowed = set(spec.conditional)
        unknown = sorted({k for k, _ in items} - allowed)
        if unknown:
            known = ", ".join(sorted(allowed)) or "none"
            raise InvalidRequest(f"If-None-Exist may use {known}; not {', '.join(unknown)}.")
        self.scoped_search(rtype, items, scope)
        return items

    async def _conditional(
        self, rtype: str, query: str, base: str, scope: SearchScope | None = None
    ) -> dict[str, Any] | None:
        items = self.conditional_search(rtype, query, scope)
        bundle = await self.search(rtype, [*items, ("_count", "2")], base, strict=True, scope=scope)
        entries = bundle.get("entry", [])
        if len(entries) > 1:
            raise PreconditionFailed("If-None-Exist matches more than one resource.")
        return entries[0]["resource"] if entries else None

    def _update_route(self, rtype: str, body: dict[str, Any]) -> CompiledWrite:
        served = self.route(rtype, "update")
        for spec in served.resource.update:
            if all(
                any(str(v).lower() == value.lower() for v in fhir_values(body, path))
                for path, value in spec.when
            ):
                return spec
        conditions = [
            " and ".join(f"{'.'.join(s.name for s in p)}={v}" for p, v in spec.when)
            for spec in served.resource.update
        ]
        raise UnprocessableEntity(
            f"The legacy system takes only these changes to {rtype} resources: "
            + "; ".join(c or "any" for c in conditions)
            + "."
        )

    async def update(
        self, rtype: str, rid: str, body: Any, *, if_match: str | None = None
    ) -> WriteResult:
        self.check_id(rid)
        return await self._replace(rtype, rid, validate_resource(body, rtype), if_match)

    async def _replace(
        self,
        rtype: str,
        rid: str,
        resource: dict[str, Any],
        if_match: str | None,
        tree: dict[str, Any] | None = None,
    ) -> WriteResult:
        """The update of a validated resource (its id checked); `tree`, its legacy
        record if it is made already."""
        if resource.get("id") != rid:
            raise InvalidRequest("The resource's id must equal the id in the URL.")
        spec = self._update_route(rtype, resource)
        if if_match is not None:
            await self._check_version(rtype, rid, spec, if_match)
        _, built = await self._run_write(rtype, "update", spec, resource, rid, tree=tree)
        answer = await self._respond(rtype, spec, resource, rid, built)
        return WriteResult(200, answer, None)

    async def _check_version(
        self, rtype: str, rid: str, spec: CompiledWrite, if_match: str
    ) -> None:
        if spec.version is None:
            raise PreconditionFailed(
                f"The legacy system keeps no version of a {rtype}: If-Match cannot be honoured."
            )
        current = await self.read(rtype, rid)
        versions = [str(v) for v in fhir_values(current, spec.version)]
        if _etag_value(if_match) not in versions:
            raise PreconditionFailed(f"The {rtype} has changed since that version.")

    async def patch(
        self, rtype: str, rid: str, operations: Any, *, if_match: str | None = None
    ) -> WriteResult:
        self.check_id(rid)
        self.route(rtype, "update")
        if not isinstance(operations, list):
            raise InvalidRequest("A JSON Patch is a list of operations.")
        if "read" not in self.routes.get(rtype, {}):
            return await self._blind_patch(rtype, rid, operations)
        current = await self.read(rtype, rid)
        try:
            patched = jsonpatch.apply_patch(current, operations)
        except (jsonpatch.JsonPatchException, JsonPointerException, TypeError) as exc:
            raise UnprocessableEntity(
                f"The patch cannot be applied: {type(exc).__name__}."
            ) from exc
        if patched.get("id") != rid or patched.get("resourceType") != rtype:
            raise UnprocessableEntity("A patch may not change the resource's type or id.")
        return await self.update(rtype, rid, patched, if_match=if_match)

    async def _blind_patch(self, rtype: str, rid: str, operations: list[Any]) -> WriteResult:
        """A patch where the legacy system cannot be read back.

        The patch applies to the id alone (a `replace` of an element it does
        not hold adds it), and one of the declared update routes must take
        the result; the answer is an OperationOutcome, not the resource.
        """
        skeleton: dict[str, Any] = {"resourceType": rtype, "id": rid}
        adds = []
        for op in operations:
            if not isinstance(op, dict) or op.get("op") not in ("replace", "add"):
                raise UnprocessableEntity(
                    f"The legacy system cannot be read, so a {rtype} patch may only "
                    "add or replace elements."
                )
            adds.append({**op, "op": "add"})
        try:
            patched = jsonpatch.apply_patch(skeleton, adds)
        except (jsonpatch.JsonPatchException, JsonPointerException, TypeError) as exc:
            raise UnprocessableEntity(
                f"The patch cannot be applied: {type(exc).__name__}."
            ) from exc
        spec = self._update_route(rtype, patched)
        await self._run_write(rtype, "update", spec, patched, rid)
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": f"The legacy system applied the change to {rtype}/{rid}.",
                }
            ],
        }
        return WriteResult(200, outcome, None)

    async def delete(self, rtype: str, rid: str) -> None:
        self.check_id(rid)
        served = self.route(rtype, "delete")
        spec = served.resource.delete
        assert spec is not None
        await self._run_write(rtype, "delete", spec, None, rid)
