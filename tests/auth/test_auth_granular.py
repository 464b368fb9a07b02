"""Granular SMART v2 scopes (`patient/Observation.rs?category=...`) and access rules."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.auth.access import access
from bridge.auth.middleware import authorize
from bridge.auth.scopes import ScopeError, parse_scopes
from bridge.auth.tokens import Principal
from bridge.errors import Forbidden

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LAB = f"patient/Observation.rs?category={CATEGORY}|laboratory"
VITALS = f"patient/Observation.rs?category={CATEGORY}|vital-signs"


def principal(scope: str, patient: str | None = "100002") -> Principal:
    return Principal(
        client_id="app", subject="u", patient=patient, scopes=parse_scopes(scope), token_id=None
    )


def observation(category: str, patient: str = "100002", code: str = "2345-7") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"{category}-{patient}",
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


def test_granular_scope_allows_matching_resources_only() -> None:
    rules = access(principal(LAB), "Observation", "s")

    assert rules is not None and not rules.unlimited
    assert rules.allows(observation("laboratory"))
    assert not rules.allows(observation("vital-signs"))
    assert not rules.allows(observation("laboratory", patient="100003"))


def test_granular_scopes_for_one_type_combine_as_a_union() -> None:
    rules = access(principal(f"{LAB} {VITALS}"), "Observation", "s")

    assert rules is not None
    assert rules.allows(observation("laboratory"))
    assert rules.allows(observation("vital-signs"))
    assert not rules.allows(observation("social-history"))


def test_granular_scope_comma_values_are_alternatives() -> None:
    scope = f"user/Observation.rs?category={CATEGORY}|laboratory,{CATEGORY}|vital-signs"
    rules = access(principal(scope, patient=None), "Observation", "r")

    assert rules is not None
    assert rules.allows(observation("vital-signs", patient="100009"))
    assert not rules.allows(observation("imaging"))


def test_granular_scope_several_parameters_all_hold() -> None:
    scope = f"user/Observation.rs?category={CATEGORY}|laboratory&code=http://loinc.org|2345-7"
    rules = access(principal(scope), "Observation", "s")

    assert rules is not None
    assert rules.allows(observation("laboratory", code="2345-7"))
    assert not rules.allows(observation("laboratory", code="718-7"))


def test_granular_scope_code_without_system_and_percent_encoding() -> None:
    encoded = "http%3A%2F%2Fterminology.hl7.org%2FCodeSystem%2Fobservation-category%7Claboratory"
    rules = access(
        principal(f"user/Observation.rs?category={encoded},vital-signs"), "Observation", "s"
    )

    assert rules is not None
    assert rules.allows(observation("laboratory"))
    assert rules.allows(observation("vital-signs"))
    assert not rules.allows(observation("imaging"))


def test_whole_type_grant_wins_over_a_granular_one() -> None:
    rules = access(principal(f"{LAB} user/Observation.rs"), "Observation", "s")

    assert rules is not None and rules.unlimited


def test_granular_read_refusal_says_which_rule() -> None:
    rules = access(principal(LAB), "Observation", "r")
    assert rules is not None

    with pytest.raises(Forbidden) as scope:
        rules.check(observation("vital-signs"))
    with pytest.raises(Forbidden) as other:
        rules.check(observation("laboratory", patient="100003"))

    assert scope.value.diagnostics == "The access token's scopes do not cover this Observation."
    assert other.value.diagnostics == "The access token is limited to another patient's data."


def test_granular_scope_does_not_allow_other_interactions_or_types() -> None:
    with pytest.raises(Forbidden):
        access(principal(LAB), "Observation", "c")
    with pytest.raises(Forbidden):
        access(principal(LAB), "Condition", "s")


def test_authorize_alone_never_widens_a_granular_scope() -> None:
    with pytest.raises(Forbidden):
        authorize(principal(LAB), "Observation", "s")


def test_system_scope_is_unlimited_without_patient() -> None:
    rules = access(principal("system/*.rs", patient=None), "Observation", "s")

    assert rules is not None and rules.unlimited


def test_system_granular_scope_is_not_confined_to_a_patient() -> None:
    rules = access(
        principal(f"system/Observation.rs?category={CATEGORY}|laboratory", None), "Observation", "s"
    )

    assert rules is not None
    assert rules.allows(observation("laboratory", patient="100777"))
    assert not rules.allows(observation("vital-signs", patient="100777"))


@pytest.mark.parametrize(
    "scope",
    [
        "patient/Observation.rs?unknown=1",
        "patient/Observation.rs?category:not=laboratory",
        "patient/Observation.rs?category",
        "patient/Observation.rs?category=",
        "patient/Observation.rs?category=a|b|c",
        "patient/Observation.rs?category=sys|",
        "patient/Observation.rs?category=a\\,b",
        "patient/*.rs?category=laboratory",
        "patient/Patient.rs?category=laboratory",
        "patient/Observation.rs?date=ge2020",
        "patient/Observation.rs?category=laboratory&",
    ],
)
def test_granular_scope_not_understood_is_refused(scope: str) -> None:
    with pytest.raises(ScopeError):
        parse_scopes(scope)
