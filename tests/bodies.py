"""FHIR bodies the tests send again and again."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from typing import Any

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"


def claim(
    mrn: str,
    encounter: str,
    diagnoses: Sequence[str] = ("I10",),
    procedures: Sequence[str] = ("99213",),
    amount: float = 95.0,
) -> dict[str, Any]:
    """A professional Claim for a visit on `encounter` (YYYY-MM-DD), as billing takes it."""
    return {
        "resourceType": "Claim",
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "professional",
                }
            ]
        },
        "use": "claim",
        "patient": {"reference": f"Patient/{mrn}"},
        "created": encounter,
        "billablePeriod": {"start": encounter},
        "provider": {"display": "General Hospital"},
        "priority": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/processpriority",
                    "code": "normal",
                }
            ]
        },
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Coverage on file"}}],
        "diagnosis": [
            {
                "sequence": i,
                "diagnosisCodeableConcept": {"coding": [{"system": ICD10CM, "code": code}]},
            }
            for i, code in enumerate(diagnoses, 1)
        ],
        "item": [
            {"sequence": i, "productOrService": {"coding": [{"system": CPT, "code": code}]}}
            for i, code in enumerate(procedures, 1)
        ],
        "total": {"value": amount, "currency": "USD"},
    }


def json_paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key and index path of a JSON value, parents before their children."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from json_paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*path, index)
            yield from json_paths(value, (*path, index))


def changed(
    body: dict[str, Any], path: tuple[Any, ...], change: Any, odd: Sequence[Any] = ()
) -> dict[str, Any] | None:
    """A copy of `body` with one change at `path`, or None where it does not apply.

    `delete`, `wrap` ([value]), `wrap-after-null` ([None, value]), `unwrap` (a list's
    first item), `json` (the value as JSON text), `rename` and `twin` (the value under
    the name fhir.resources gives the field: `_status` is `status__ext`, `class` is
    `class_fhir`; `twin` keeps the original too), or an index into `odd` (that value)."""
    body = copy.deepcopy(body)
    *parent_path, last = path
    parent: Any = body
    for step in parent_path:
        parent = parent[step]
    value = parent[last]
    if change == "delete":
        del parent[last]
    elif change == "wrap":
        parent[last] = [value]
    elif change == "wrap-after-null":
        parent[last] = [None, value]
    elif change == "unwrap":
        if not isinstance(value, list) or not value:
            return None
        parent[last] = value[0]
    elif change == "json":
        parent[last] = json.dumps(value)
    elif change in ("rename", "twin"):
        if not isinstance(last, str):
            return None
        other = f"{last[1:]}__ext" if last.startswith("_") else f"{last}_fhir"
        parent[other] = value
        if change == "rename":
            del parent[last]
    else:
        parent[last] = copy.deepcopy(odd[change])
    return body


def heart_rate(mrn: str, value: float, device: str | None = None) -> dict[str, Any]:
    """A wearable's heart-rate reading (LOINC 8867-4) for the patient `mrn`."""
    reading: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{mrn}"},
        "effectiveDateTime": "2026-11-24T14:30:00Z",
        "valueQuantity": {
            "value": value,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }
    if device is not None:
        reading["device"] = {"identifier": {"value": device}}
    return reading
