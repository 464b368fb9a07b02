"""FHIR bodies the tests send again and again."""

from __future__ import annotations

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
