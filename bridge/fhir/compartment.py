"""The Patient compartment: is a resource about a given patient?

Used to confine `patient/` scopes to the token's own patient.
"""

from __future__ import annotations

from typing import Any

__all__ = ["in_patient_compartment"]

# Elements that point at the patient a resource is about (FHIR R4 CompartmentDefinition).
_LINKS = ("subject", "patient", "beneficiary", "individual")


def in_patient_compartment(resource: dict[str, Any], patient: str) -> bool:
    if resource.get("resourceType") == "Patient":
        return bool(resource.get("id") == patient)
    target = f"Patient/{patient}"
    for name in _LINKS:
        link = resource.get(name)
        if isinstance(link, dict) and link.get("reference") == target:
            return True
    return False
