"""What a token may see of one resource type: its grants, as rules on each resource.

A resource is allowed when one grant for its type and interaction allows it
(grants combine as a union): a `user/` or `system/` grant without restriction
allows everything, a `patient/` grant only the token's patient's compartment,
and a granular grant only resources that match its restriction.

    rules = access(principal, rtype, "s")
    kept = [r for r in resources if rules is None or rules.allows(r)]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from bridge.auth.scopes import Restriction
from bridge.auth.tokens import Principal
from bridge.errors import Forbidden
from bridge.fhir.compartment import patient_compartment

__all__ = ["Access", "access"]

_OTHER_PATIENT = "The access token is limited to another patient's data."


@dataclass(frozen=True)
class _Rule:
    confined: bool  # to the token's patient's compartment
    restriction: Restriction | None


@dataclass(frozen=True)
class Access:
    resource: str
    patient: str | None
    rules: tuple[_Rule, ...]

    @cached_property
    def unlimited(self) -> bool:
        """Every resource of the type is allowed: no per-resource check needed."""
        return any(not r.confined and r.restriction is None for r in self.rules)

    @cached_property
    def confined(self) -> bool:
        """Every rule is confined to the token's patient."""
        return all(r.confined for r in self.rules)

    def _in_compartment(self, resource: dict[str, Any]) -> bool:
        return self.patient is not None and patient_compartment().contains(resource, self.patient)

    def allows(self, resource: dict[str, Any]) -> bool:
        for rule in self.rules:
            if rule.confined and not self._in_compartment(resource):
                continue
            if rule.restriction is not None and not rule.restriction.allows(resource):
                continue
            return True
        return False

    def check_write(self, resource: dict[str, Any]) -> None:
        """Forbidden (403) unless `resource` may be written: as `check`, and under a
        patient grant every patient the resource names must be the token's patient
        (naming oneself beside another patient is not enough)."""
        for rule in self.rules:
            if rule.confined and (
                self.patient is None or patient_compartment().owners(resource) != {self.patient}
            ):
                continue
            if rule.restriction is not None and not rule.restriction.allows(resource):
                continue
            return
        if any(r.restriction is None or r.restriction.allows(resource) for r in self.rules):
            raise Forbidden(_OTHER_PATIENT)
        raise Forbidden(f"The access token's scopes do not cover this {self.resource}.")

    def check(self, resource: dict[str, Any]) -> None:
        """Forbidden (403) unless `resource` is allowed."""
        if self.allows(resource):
            return
        if any(r.restriction is None or r.restriction.allows(resource) for r in self.rules):
            raise Forbidden(_OTHER_PATIENT)
        raise Forbidden(f"The access token's scopes do not cover this {self.resource}.")


def access(principal: Principal | None, resource: str, interaction: str) -> Access | None:
    """The rules for `interaction` (one of c r u d s) on `resource`; None when authentication
    is off. Forbidden (403) when no grant allows the interaction at all."""
    if principal is None:
        return None
    # A token's answers never change (principals are kept per token): worked out once.
    known = principal.access_rules.get((resource, interaction))
    if known is not None:
        return known
    grants = principal.scopes.matching(resource, interaction)
    if not grants:
        raise Forbidden(f"The access token does not allow this on {resource}.")
    rules = tuple(
        _Rule(g.context == "patient", g.restriction)
        for g in grants
        if g.context != "patient" or principal.patient is not None
    )
    if not rules:
        raise Forbidden("A patient scope needs a token with a patient in context.")
    found = Access(resource, principal.patient, rules)
    if len(principal.access_rules) < 1024:
        principal.access_rules[(resource, interaction)] = found
    return found
