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


@pytest.mark.parametrize(
    ("resource", "owners"),
    [
        (
            {
                "resourceType": "Patient",
                "id": "p1",
                "link": [{"other": {"reference": "Patient/p2"}}],
            },
            {"p1", "p2"},
        ),
        ({"resourceType": "Patient", "id": 7}, set()),
        ({"resourceType": "Observation", "subject": {"reference": "Patient/p1"}}, {"p1"}),
        (
            {"resourceType": "Observation", "subject": [{"reference": "Patient/p1"}, "x", None]},
            {"p1"},
        ),
        ({"resourceType": "Observation", "performer": [{"reference": "Practitioner/d1"}]}, set()),
        ({"resourceType": "Observation", "subject": {"reference": 5}}, set()),
        ({"resourceType": "Observation", "subject": "Patient/p1"}, set()),
        (
            {
                "resourceType": "Appointment",
                "participant": [
                    {"actor": {"reference": "Patient/p1"}},
                    {"type": []},
                    {"actor": {"reference": "Patient/p3"}},
                ],
            },
            {"p1", "p3"},
        ),
        ({"resourceType": ["Patient"], "id": "p1"}, set()),
        ({}, set()),
    ],
)
def test_owners_are_the_patients_a_resource_references(resource: dict, owners: set) -> None:
    assert patient_compartment().owners(resource) == owners
