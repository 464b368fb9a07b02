"""The required elements of the US Core profiles, checked by hand.

The FHIR R4 JSON schema and fhir.resources check the base resource only; US
Core adds elements a profiled resource must have. These checks name each one
(US Core 3.1.1 and later agree on them), so a failure says which element of
which resource is missing. Each function takes one resource dict and raises
AssertionError.
"""

from __future__ import annotations

from typing import Any

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"

__all__ = [
    "assert_us_core_allergy",
    "assert_us_core_condition",
    "assert_us_core_diagnostic_report_lab",
    "assert_us_core_lab_observation",
    "assert_us_core_medication_request",
    "assert_us_core_patient",
    "assert_us_core_practitioner",
    "assert_us_core_vital_signs",
]


def _where(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id', '(no id)')}"


def _require(resource: dict[str, Any], *names: str) -> None:
    for name in names:
        value = resource.get(name)
        assert value not in (None, "", [], {}), f"{_where(resource)}: US Core requires {name}"


def _has_coding(concept: Any, system: str, code: str) -> bool:
    if not isinstance(concept, dict):
        return False
    return any(
        c.get("system") == system and c.get("code") == code for c in concept.get("coding", [])
    )


def _codeable(resource: dict[str, Any], name: str) -> None:
    concept = resource.get(name)
    assert isinstance(concept, dict) and (concept.get("coding") or concept.get("text")), (
        f"{_where(resource)}: US Core requires {name} with a coding or a text"
    )
    for coding in concept.get("coding", []):
        assert coding.get("system") and coding.get("code"), (
            f"{_where(resource)}: {name}.coding needs a system and a code, got {coding}"
        )


def _patient_reference(resource: dict[str, Any], name: str) -> None:
    ref = resource.get(name)
    assert isinstance(ref, dict) and str(ref.get("reference", "")).startswith("Patient/"), (
        f"{_where(resource)}: US Core requires {name} to reference a Patient, got {ref}"
    )


def _effective(resource: dict[str, Any]) -> None:
    assert any(k in resource for k in ("effectiveDateTime", "effectivePeriod")), (
        f"{_where(resource)}: US Core requires effective[x]"
    )


def _value_or_absent(resource: dict[str, Any]) -> None:
    has_value = any(k.startswith("value") for k in resource)
    assert has_value or "dataAbsentReason" in resource or "component" in resource, (
        f"{_where(resource)}: US Core requires value[x] or dataAbsentReason"
    )


def assert_us_core_patient(patient: dict[str, Any]) -> None:
    """us-core-patient: identifier (system and value), name, gender."""
    _require(patient, "identifier", "name", "gender")
    for identifier in patient["identifier"]:
        assert identifier.get("system") and identifier.get("value"), (
            f"{_where(patient)}: identifier needs a system and a value, got {identifier}"
        )
    for name in patient["name"]:
        assert name.get("family") or name.get("given"), (
            f"{_where(patient)}: a name needs a family or a given name, got {name}"
        )


def assert_us_core_practitioner(practitioner: dict[str, Any]) -> None:
    """us-core-practitioner: identifier (an NPI where known), name with a family name."""
    _require(practitioner, "identifier", "name")
    for identifier in practitioner["identifier"]:
        assert identifier.get("system") and identifier.get("value"), (
            f"{_where(practitioner)}: identifier needs a system and a value"
        )
    assert all(n.get("family") for n in practitioner["name"]), (
        f"{_where(practitioner)}: US Core requires name.family"
    )


def assert_us_core_lab_observation(obs: dict[str, Any]) -> None:
    """us-core-observation-lab: status, category laboratory, code, subject, value or reason."""
    _require(obs, "status", "category", "code", "subject")
    assert any(_has_coding(c, OBSERVATION_CATEGORY, "laboratory") for c in obs["category"]), (
        f"{_where(obs)}: US Core requires category laboratory, got {obs['category']}"
    )
    _codeable(obs, "code")
    _patient_reference(obs, "subject")
    _effective(obs)
    _value_or_absent(obs)


def assert_us_core_vital_signs(obs: dict[str, Any]) -> None:
    """vitalsigns / us-core-vital-signs: status, category vital-signs, code, subject,
    effective[x] and a value in UCUM."""
    _require(obs, "status", "category", "code", "subject")
    assert any(_has_coding(c, OBSERVATION_CATEGORY, "vital-signs") for c in obs["category"]), (
        f"{_where(obs)}: the vital-signs profile requires category vital-signs"
    )
    _codeable(obs, "code")
    _patient_reference(obs, "subject")
    _effective(obs)
    _value_or_absent(obs)
    if "valueQuantity" in obs:
        quantity = obs["valueQuantity"]
        assert quantity.get("system") == UCUM, f"{_where(obs)}: vital signs are UCUM"
        for key in ("value", "unit", "code"):
            assert key in quantity, f"{_where(obs)}: valueQuantity needs {key}"


def assert_us_core_allergy(allergy: dict[str, Any]) -> None:
    """us-core-allergyintolerance: clinicalStatus, verificationStatus, code, patient."""
    _require(allergy, "clinicalStatus", "verificationStatus", "code", "patient")
    _codeable(allergy, "clinicalStatus")
    _codeable(allergy, "verificationStatus")
    _codeable(allergy, "code")
    _patient_reference(allergy, "patient")


def assert_us_core_condition(condition: dict[str, Any]) -> None:
    """us-core-condition: category, code, subject (and a coded category)."""
    _require(condition, "category", "code", "subject")
    assert all(c.get("coding") for c in condition["category"]), (
        f"{_where(condition)}: category needs a coding"
    )
    _codeable(condition, "code")
    _patient_reference(condition, "subject")


def assert_us_core_medication_request(request: dict[str, Any]) -> None:
    """us-core-medicationrequest: status, intent, medication[x], subject, authoredOn,
    requester."""
    _require(request, "status", "intent", "subject", "authoredOn", "requester")
    assert any(k.startswith("medication") for k in request), (
        f"{_where(request)}: US Core requires medication[x]"
    )
    if "medicationCodeableConcept" in request:
        _codeable(request, "medicationCodeableConcept")
    _patient_reference(request, "subject")
    requester = request["requester"]
    assert any(k in requester for k in ("reference", "identifier", "display")), (
        f"{_where(request)}: requester is empty"
    )


def assert_us_core_diagnostic_report_lab(report: dict[str, Any]) -> None:
    """us-core-diagnosticreport-lab: status, category LAB, code, subject, effective[x],
    issued."""
    _require(report, "status", "category", "code", "subject", "issued")
    assert any(_has_coding(c, V2_0074, "LAB") for c in report["category"]), (
        f"{_where(report)}: US Core requires category LAB (v2-0074)"
    )
    _codeable(report, "code")
    _patient_reference(report, "subject")
    _effective(report)
