"""SMART on FHIR scopes, v1 (`patient/Observation.read`) and v2 (`patient/Observation.rs`).

A token's resource scopes become grants. A scope that looks like a resource
scope but cannot be understood makes the whole token refused: the gateway never
guesses wider access than a token states.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Grant", "ScopeError", "Scopes", "parse_scopes"]

_RESOURCE_SCOPE = re.compile(
    r"^(?P<ctx>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<perm>[a-z*]+)(?:\?(?P<q>.+))?$"
)
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_NON_RESOURCE = re.compile(
    r"^(openid|profile|fhirUser|launch(/[a-z]+)?|offline_access|online_access)$"
)


class ScopeError(ValueError):
    """A scope the gateway does not understand."""


@dataclass(frozen=True)
class Grant:
    context: str  # patient, user or system
    resource: str  # a type or '*'
    interactions: frozenset[str]  # letters of cruds
    query: str | None = None  # v2 granular restriction, e.g. category=...


@dataclass(frozen=True)
class Scopes:
    grants: tuple[Grant, ...]

    def matching(self, resource: str, interaction: str) -> list[Grant]:
        """The grants that allow `interaction` (one of c r u d s) on `resource`."""
        # A granular v2 scope (`...rs?category=...`) grants only part of a type;
        # until such restrictions are applied to results, it grants nothing
        # rather than the whole type.
        return [
            g
            for g in self.grants
            if g.resource in ("*", resource) and interaction in g.interactions and not g.query
        ]


def _permissions(perm: str) -> frozenset[str]:
    if perm in _V1:
        return frozenset(_V1[perm])
    if perm and re.fullmatch(r"c?r?u?d?s?", perm):
        return frozenset(perm)
    raise ScopeError("unknown permissions in a resource scope")


def parse_scopes(scope: str) -> Scopes:
    grants = []
    for item in scope.split():
        m = _RESOURCE_SCOPE.match(item)
        if m is None:
            if _NON_RESOURCE.match(item) or "/" not in item:
                continue  # identity and launch scopes grant no data
            raise ScopeError("a scope of an unknown form")
        grants.append(Grant(m["ctx"], m["type"], _permissions(m["perm"]), m["q"]))
    return Scopes(tuple(grants))
