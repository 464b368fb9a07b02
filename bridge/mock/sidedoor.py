"""The JSON side door under ``/_mock/``: info, stats, reset, fault injection, patients.

It exists for tests and the demo; it is plain JSON, never SOAP, and the
gateway never calls it. Bad input gets a 400 with ``{"error": "..."}``
naming the field and what it accepts. Views of each system's records
(vitals, results, slots, claims, ...) are in :mod:`bridge.mock.views`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.mock.catalog import SYSTEMS
from bridge.mock.hospital_state import Hospital
from bridge.mock.options import HOSPITAL_TIMEZONE
from bridge.mock.state import WRITE_FAULTS

__all__ = ["BadRequest", "error", "query_int", "routes"]

_DEFAULT_LIMIT = 100
# Longest injected delay (latency_ms, write_delay_ms): ten minutes. Each
# delayed call holds a worker thread asleep; beyond this it would outlive
# any client, and past ~292 years time.sleep() itself overflows.
_MAX_DELAY_MS = 600_000


class BadRequest(Exception):
    """A side-door request with a bad value; its message names the field and the fix."""


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _number(body: dict[str, Any], key: str, *, low: float, high: float | None) -> float | None:
    if key not in body:
        return None
    value = body[key]
    # bool is an int in Python; "true" is not a latency. Python's JSON reads
    # NaN and Infinity, which would then break every JSON answer (and sleep).
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"'{key}' must be a number, got {json.dumps(value)}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise BadRequest(f"'{key}' must be {bounds}, got {value}")
    return float(value)


_FAULT_KEYS = (
    "system",
    "latency_ms",
    "fault_rate",
    "expire_sessions",
    "refuse_seconds",
    "write_fault",
    "write_delay_ms",
    "drop_calls",
)


def routes(hospital: Hospital) -> list[Route]:
    """The side door's routes, bound to the running hospital's state."""
    ehr = hospital.ehr

    async def info(request: Request) -> JSONResponse:
        options = hospital.options
        return JSONResponse(
            {
                "seed": options.seed,
                "patients": options.patients,
                "today": hospital.world.today.isoformat(),
                "timezone": HOSPITAL_TIMEZONE,
                "systems": {
                    spec.name: {
                        "path": spec.path,
                        "wsdl": spec.path + "?wsdl",
                        "namespace": spec.namespace,
                        "soap": spec.soap_version,
                        "sessions": spec.session_style,
                    }
                    for spec in SYSTEMS
                },
            }
        )

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(hospital.stats())

    async def reset(request: Request) -> JSONResponse:
        hospital.reset()
        return JSONResponse({"ok": True})

    async def get_faults(request: Request) -> JSONResponse:
        return JSONResponse(hospital.faults())

    async def delete_faults(request: Request) -> JSONResponse:
        hospital.clear_faults()
        return JSONResponse(hospital.faults())

    async def post_faults(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError as exc:
            return error(400, f"body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return error(400, "body must be a JSON object")
        unknown = sorted(set(body) - set(_FAULT_KEYS))
        if unknown:
            return error(400, f"unknown keys {unknown}; known: {list(_FAULT_KEYS)}")
        try:
            latency = _number(body, "latency_ms", low=0, high=_MAX_DELAY_MS)
            rate = _number(body, "fault_rate", low=0, high=1)
            refuse = _number(body, "refuse_seconds", low=0, high=None)
            write_delay = _number(body, "write_delay_ms", low=0, high=_MAX_DELAY_MS)
        except BadRequest as exc:
            return error(400, str(exc))
        drops = body.get("drop_calls")
        if drops is not None and (
            isinstance(drops, bool) or not isinstance(drops, int) or drops < 0
        ):
            return error(
                400, f"'drop_calls' must be a non-negative integer, got {json.dumps(drops)}"
            )
        write_fault = body.get("write_fault")
        if write_fault is not None and write_fault not in WRITE_FAULTS:
            return error(
                400,
                f"'write_fault' must be one of {list(WRITE_FAULTS)} or null, "
                f"got {json.dumps(write_fault)}",
            )
        expire = body.get("expire_sessions", False)
        if not isinstance(expire, bool):
            return error(400, f"'expire_sessions' must be true or false, got {json.dumps(expire)}")
        name = body.get("system")
        if name is None:
            targets = list(hospital.systems.values())
        elif isinstance(name, str) and name in hospital.systems:
            targets = [hospital.systems[name]]
        else:
            known = sorted(hospital.systems)
            return error(400, f"unknown system {json.dumps(name)}; known: {known}")
        for system in targets:
            system.set_faults(
                latency_ms=latency,
                fault_rate=rate,
                refuse_seconds=refuse,
                write_fault=write_fault,
                write_delay_ms=write_delay,
                clear_write_fault="write_fault" in body and write_fault is None,
            )
            if drops is not None:
                system.drop_next_calls(drops)
            if expire:
                system.expire_sessions()
        return JSONResponse(hospital.faults())

    async def patients(request: Request) -> JSONResponse:
        try:
            limit = query_int(request, "limit", _DEFAULT_LIMIT)
            offset = query_int(request, "offset", 0)
        except BadRequest as exc:
            return error(400, str(exc))
        page = ehr.data.records[offset : offset + limit]
        return JSONResponse([r.to_soap_dict() for r in page])

    async def patient(request: Request) -> JSONResponse:
        record = ehr.data.by_mrn.get(request.path_params["mrn"])
        if record is None:
            return error(404, "no patient with that MRN")
        return JSONResponse(record.to_soap_dict())

    return [
        Route("/_mock/info", info, methods=["GET"]),
        Route("/_mock/stats", stats, methods=["GET"]),
        Route("/_mock/reset", reset, methods=["POST"]),
        Route("/_mock/faults", get_faults, methods=["GET"]),
        Route("/_mock/faults", post_faults, methods=["POST"]),
        Route("/_mock/faults", delete_faults, methods=["DELETE"]),
        Route("/_mock/patients", patients, methods=["GET"]),
        Route("/_mock/patients/{mrn}", patient, methods=["GET"]),
    ]


def query_int(request: Request, key: str, default: int) -> int:
    raw = request.query_params.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{key}' must be a non-negative integer, got {raw!r}") from None
    if value < 0:
        raise BadRequest(f"'{key}' must be a non-negative integer, got {raw!r}")
    return value
