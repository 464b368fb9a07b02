"""The Patient compartment, from FHIR's CompartmentDefinition data."""

from __future__ import annotations

import pytest

from bridge.fhir.compartment import patient_compartment


@pytest.mark.parametrize(
    ("resource", "inside"),
    [
        ({"resourceType": "Patient", "id": "p1"}, True),
        ({"resourceType": "Patient", "id": "p2"}, False),
        ({"resourceType": "Observation", "subject": {"reference": "Patient/p1"}}, True),
        ({"resourceType": "Observation", "subject": {"reference": "Patient/p2"}}, False),
        ({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"}}, True),
        (
            {
                "resourceType": "Appointment",
                "participant": [
                    {"actor": {"reference": "Practitioner/d1"}},
                    {"actor": {"reference": "Patient/p1"}},
                ],
            },
            True,
        ),
        ({"resourceType": "Practitioner", "id": "p1"}, False),
        ({"resourceType": "Slot", "id": "s1"}, False),
        ({"resourceType": "Observation"}, False),
    ],
)
def test_compartment_membership_follows_the_definition(
    resource: dict[str, object], inside: bool
) -> None:
    assert patient_compartment().contains(resource, "p1") is inside
