"""SMART scopes (v1 and v2) and authorize()."""

from __future__ import annotations

import pytest

from bridge.auth.middleware import authorize
from bridge.auth.scopes import Grant, ScopeError, Scopes, parse_scopes
from bridge.auth.tokens import Principal
from bridge.errors import Forbidden

CRUDS = frozenset("cruds")


def principal(scope: str, patient: str | None = None) -> Principal:
    return Principal(
        client_id="app", subject="u1", patient=patient, scopes=parse_scopes(scope), token_id=None
    )


# -- parse_scopes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "grant"),
    [
        ("patient/Observation.read", Grant("patient", "Observation", frozenset("rs"))),
        ("patient/Observation.write", Grant("patient", "Observation", frozenset("cud"))),
        ("patient/Observation.*", Grant("patient", "Observation", CRUDS)),
        ("user/*.write", Grant("user", "*", frozenset("cud"))),
        ("user/*.*", Grant("user", "*", CRUDS)),
        ("system/Patient.read", Grant("system", "Patient", frozenset("rs"))),
    ],
)
def test_parse_scopes_v1(scope: str, grant: Grant) -> None:
    assert parse_scopes(scope).grants == (grant,)


@pytest.mark.parametrize(
    ("scope", "grant"),
    [
        ("patient/Observation.rs", Grant("patient", "Observation", frozenset("rs"))),
        ("patient/Observation.cruds", Grant("patient", "Observation", CRUDS)),
        ("user/Patient.r", Grant("user", "Patient", frozenset("r"))),
        ("user/*.s", Grant("user", "*", frozenset("s"))),
        ("system/Encounter.cud", Grant("system", "Encounter", frozenset("cud"))),
    ],
)
def test_parse_scopes_v2(scope: str, grant: Grant) -> None:
    assert parse_scopes(scope).grants == (grant,)


def test_parse_scopes_v2_granular() -> None:
    scope = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"

    (grant,) = parse_scopes(scope).grants

    assert grant.context == "patient"
    assert grant.resource == "Observation"
    assert grant.interactions == frozenset("rs")
    assert grant.query == (
        "category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    )


def test_parse_scopes_identity_scopes_grant_nothing() -> None:
    scopes = parse_scopes(
        "openid fhirUser profile launch launch/patient launch/encounter offline_access "
        "online_access"
    )

    assert scopes.grants == ()


def test_parse_scopes_mixed() -> None:
    scopes = parse_scopes("openid fhirUser launch/patient patient/Patient.rs offline_access")

    assert scopes.grants == (Grant("patient", "Patient", frozenset("rs")),)


def test_parse_scopes_empty() -> None:
    assert parse_scopes("").grants == ()
    assert parse_scopes("   ").grants == ()


@pytest.mark.parametrize(
    "scope",
    [
        "patient/Observation.xyz",
        "patient/Observation.sr",  # v2 letters must be in cruds order
        "patient/Observation.rr",
        "patient/Observation.readwrite",
        "patient/Observation.",
        "patient/observation.read",
        "patient/Observation",
        "foo/Bar.read",
        "Patient/Observation.read",
        "patient/*/Observation.read",
        "patient/Observation.rs?",
        "openid patient/observation.read",
    ],
)
def test_parse_scopes_malformed_resource_scope_is_refused(scope: str) -> None:
    with pytest.raises(ScopeError):
        parse_scopes(scope)


# -- Scopes.matching ---------------------------------------------------------------------


def test_scopes_matching_by_type_and_interaction() -> None:
    scopes = parse_scopes("patient/Observation.rs user/Patient.r")

    assert scopes.matching("Observation", "r") == [scopes.grants[0]]
    assert scopes.matching("Observation", "s") == [scopes.grants[0]]
    assert scopes.matching("Observation", "c") == []
    assert scopes.matching("Patient", "r") == [scopes.grants[1]]
    assert scopes.matching("Patient", "s") == []
    assert scopes.matching("Encounter", "r") == []


def test_scopes_matching_wildcard_type() -> None:
    scopes = parse_scopes("user/*.read patient/Patient.write")

    assert scopes.matching("Encounter", "r") == [scopes.grants[0]]
    assert scopes.matching("Patient", "u") == [scopes.grants[1]]
    assert scopes.matching("Patient", "r") == [scopes.grants[0]]


def test_scopes_matching_nothing() -> None:
    assert Scopes(()).matching("Patient", "r") == []


# -- authorize -------------------------------------------------------------------------


def test_authorize_without_principal_is_not_confined() -> None:
    assert authorize(None, "Patient", "r") is False


def test_authorize_user_scope_is_not_confined() -> None:
    assert authorize(principal("user/Patient.rs"), "Patient", "r") is False


def test_authorize_system_scope_is_not_confined() -> None:
    assert authorize(principal("system/*.read"), "Patient", "s") is False


def test_authorize_patient_scope_with_patient_is_confined() -> None:
    assert authorize(principal("patient/Patient.rs", patient="100001"), "Patient", "r") is True


def test_authorize_user_and_patient_scopes_together_are_not_confined() -> None:
    p = principal("patient/Patient.rs user/Patient.read", patient="100001")

    assert authorize(p, "Patient", "s") is False


def test_authorize_patient_scope_without_patient_is_forbidden() -> None:
    with pytest.raises(Forbidden) as info:
        authorize(principal("patient/Patient.rs"), "Patient", "r")

    assert info.value.diagnostics == "A patient scope needs a token with a patient in context."


@pytest.mark.parametrize(
    ("scope", "resource", "interaction"),
    [
        ("patient/Observation.rs", "Patient", "r"),
        ("user/Patient.r", "Patient", "s"),
        ("user/Patient.read", "Patient", "c"),
        ("openid fhirUser", "Patient", "r"),
        ("", "Patient", "r"),
    ],
)
def test_authorize_without_a_matching_scope_is_forbidden(
    scope: str, resource: str, interaction: str
) -> None:
    with pytest.raises(Forbidden) as info:
        authorize(principal(scope, patient="100001"), resource, interaction)

    assert info.value.status == 403
    assert info.value.code == "forbidden"
    assert info.value.diagnostics == f"The access token does not allow this on {resource}."


def test_authorize_granular_scope_does_not_grant_the_whole_type() -> None:
    # Nothing downstream applies a grant's query, so a granular grant alone must
    # not read as access to every resource of the type.
    p = principal("user/Patient.rs?gender=female")

    with pytest.raises(Forbidden):
        authorize(p, "Patient", "s")
