"""FHIR operations (`$name`), each served by the SOAP calls its mapping declares.

Inputs come from the query string (GET) or a `Parameters` body (POST); the
answer is a `Parameters` built from the declared outputs, or a resource
built from the declared record.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from lxml import etree

from bridge.errors import InvalidRequest, MethodNotAllowed, NotFound
from bridge.gateway.bundles import BundleInteractions
from bridge.gateway.core import FAULTS
from bridge.gateway.lookups import LOST, OutcomeUnknown
from bridge.gateway.steps import run_steps
from bridge.mapping.compiled import CompiledOperation, RunContext
from bridge.mapping.runner import build_resource
from bridge.mapping.transforms import TransformError
from bridge.soap.pool import Session

__all__ = ["OperationInteractions"]

log = logging.getLogger("bridge.gateway")

_VALUE_KEYS = {
    "string": "valueString",
    "code": "valueCode",
    "date": "valueDate",
    "dateTime": "valueDateTime",
    "integer": "valueInteger",
    "decimal": "valueDecimal",
    "boolean": "valueBoolean",
    "reference": "valueReference",
}


def _inputs(query: Sequence[tuple[str, str]], body: Any) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, text in query:
        if not key.startswith("_"):
            values.setdefault(key, text)
    if body is None:
        return values
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("An operation's body is a Parameters resource.")
    for item in body.get("parameter") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequest("Each Parameters.parameter needs a name.")
        value = next((v for k, v in item.items() if k.startswith("value")), None)
        if isinstance(value, dict):
            value = value.get("reference")
        if value is not None:
            values.setdefault(
                item["name"], str(value).lower() if isinstance(value, bool) else str(value)
            )
    return values


class OperationInteractions(BundleInteractions):
    def operation_spec(self, rtype: str, name: str, rid: str | None) -> CompiledOperation:
        if rtype in self.routes and f"${name}" not in self.routes[rtype]:
            known = sorted(i for i in self.routes[rtype] if i.startswith("$"))
            raise MethodNotAllowed(
                f"{rtype} has no operation ${name}; "
                + (f"its operations: {', '.join(known)}." if known else "it has none.")
            )
        served = self.route(rtype, f"${name}")
        op = served.resource.operations[name]
        if (op.level == "instance") != (rid is not None):
            where = f"{rtype}/[id]/${name}" if op.level == "instance" else f"{rtype}/${name}"
            raise MethodNotAllowed(f"${name} is invoked as {where}.")
        return op

    async def operation(
        self,
        rtype: str,
        name: str,
        rid: str | None,
        query: Sequence[tuple[str, str]],
        body: Any,
    ) -> dict[str, Any]:
        op = self.operation_spec(rtype, name, rid)
        served = self.route(rtype, f"${name}")
        if rid is not None:
            self.check_id(rid)
        given = _inputs(query, body)
        unknown = sorted(set(given) - set(op.params))
        if unknown:
            known = ", ".join(sorted(op.params)) or "none"
            raise InvalidRequest(
                f"${name} takes no parameter {', '.join(unknown)}; it takes {known}."
            )
        values: dict[str, str] = {"id": rid} if rid else {}
        for pname, (kind, required, pipeline) in op.params.items():
            raw = given.get(pname)
            if raw is None:
                if required:
                    raise InvalidRequest(f"${name} needs the parameter {pname}.")
                continue
            if kind == "reference":
                raw = raw.rsplit("/", 1)[-1]
            try:
                values[f"params.{pname}"] = str(pipeline.to_legacy(raw)) if pipeline.steps else raw
            except TransformError as exc:
                raise InvalidRequest(f"${name}: {pname}: {exc}") from None
        ctx = RunContext(values=values)

        async def work(session: Session) -> list[etree._Element]:
            ctx.steps.clear()
            return await run_steps(served.backend, session, op.steps, ctx)

        try:
            # An operation that changes legacy data is a write: never rerun blindly.
            replies = await served.backend.run(work, idempotent=not op.changes)
        except FAULTS as error:
            self.faulted(served, error)
        except LOST:
            if not op.changes:
                raise
            served.backend.stats.ambiguous["unknown"] += 1
            raise OutcomeUnknown(
                f"The legacy system '{served.system.name}' may or may not have applied "
                f"${name}: its answer was lost. Check the {rtype} before invoking ${name} "
                "again; repeating it blindly may apply it twice."
            ) from None
        reply = replies[-1] if replies else None
        if reply is None:
            raise NotFound(f"${name} found nothing.")
        if op.record is not None:
            record = reply.find(op.record)
            if record is None:
                raise NotFound(f"${name} found nothing.")
            return build_resource(served.resource, record, ctx)
        parameters = []
        for oname, kind, path, pipeline in op.outputs:
            text = (reply.findtext(path) or "").strip()
            if not text:
                continue
            try:
                value: Any = pipeline.to_fhir(text) if pipeline.steps else text
                if kind == "integer":
                    value = int(value)
                elif kind == "decimal":
                    value = float(value)
            except (TransformError, TypeError, ValueError):
                log.warning("operation %s: output %s dropped: not a %s", name, oname, kind)
                continue
            if kind == "boolean":
                value = str(value).lower() in ("true", "1", "y", "yes")
            parameters.append({"name": oname, _VALUE_KEYS[kind]: value})
        return {"resourceType": "Parameters", "parameter": parameters}
