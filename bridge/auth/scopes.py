"""SMART on FHIR scopes, v1 (`patient/Observation.read`) and v2 (`patient/Observation.rs`),
with granular v2 restrictions (`patient/Observation.rs?category=...|laboratory`).

A token's resource scopes become grants. A scope that looks like a resource
scope but cannot be understood makes the whole token refused: the gateway never
guesses wider access than a token states. A granular restriction is understood
when every parameter in it is one of `granular-params.json` for its type, with
plain token values (`system|code`, `code`, comma-separated alternatives);
anything else (modifiers, other parameters, a restriction on `*`) is refused.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from bridge.fhir.filter import matches
from bridge.fhir.search import SearchValue

__all__ = ["Grant", "Restriction", "ScopeError", "Scopes", "parse_scopes"]

_RESOURCE_SCOPE = re.compile(
    r"^(?P<ctx>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<perm>[a-z*]+)(?:\?(?P<q>.+))?$"
)
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_NON_RESOURCE = re.compile(
    r"^(openid|profile|fhirUser|launch(/[a-z]+)?|offline_access|online_access)$"
)
_PARAM = re.compile(r"^[a-z][a-z-]*$")


class ScopeError(ValueError):
    """A scope the gateway does not understand."""


@functools.cache
def _granular_params() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (Path(__file__).parent / "granular-params.json").read_text(encoding="utf-8")
    )
    data.pop("_comment", None)
    return data


@dataclass(frozen=True)
class _Term:
    path: tuple[str, ...]
    kind: str
    values: tuple[SearchValue, ...]  # alternatives (OR)


@dataclass(frozen=True)
class Restriction:
    """The resources of one type a granular scope covers: every term holds (AND)."""

    query: str
    terms: tuple[_Term, ...]

    def allows(self, resource: dict[str, Any]) -> bool:
        try:
            return all(
                any(matches(resource, term.path, term.kind, v) for v in term.values)
                for term in self.terms
            )
        except (AttributeError, TypeError):
            # A resource of the wrong shape (a body a client wrote: `coding` as a string
            # or a list of strings) matches no restriction: refused, never a 500.
            return False


def _token_value(name: str, raw: str) -> SearchValue:
    if not raw or "\\" in raw:
        raise ScopeError("an empty or escaped value in a granular scope")
    if "|" in raw:
        system, _, code = raw.partition("|")
        if not code or "|" in code:
            raise ScopeError("a token value of an unknown form in a granular scope")
        return SearchValue(name, code, system=system)
    return SearchValue(name, raw)


def parse_restriction(resource: str, query: str) -> Restriction:
    if resource == "*":
        raise ScopeError("a granular scope must name one resource type")
    known = _granular_params()
    terms = []
    for part in query.split("&"):
        name, eq, raw = part.partition("=")
        name = unquote(name)
        if not eq or not _PARAM.match(name):
            raise ScopeError("a granular scope parameter of an unknown form")
        spec = known.get(name)
        if spec is None or resource not in spec["paths"]:
            raise ScopeError("a granular scope parameter this server cannot apply")
        if spec["kind"] != "token":
            raise ScopeError("a granular scope parameter this server cannot apply")
        values = tuple(_token_value(name, unquote(v)) for v in raw.split(","))
        terms.append(_Term(tuple(spec["paths"][resource].split(".")), spec["kind"], values))
    return Restriction(query, tuple(terms))


@dataclass(frozen=True)
class Grant:
    context: str  # patient, user or system
    resource: str  # a type or '*'
    interactions: frozenset[str]  # letters of cruds
    query: str | None = None  # v2 granular restriction, e.g. category=...
    restriction: Restriction | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Scopes:
    grants: tuple[Grant, ...]

    def matching(self, resource: str, interaction: str) -> list[Grant]:
        """The grants that allow `interaction` (one of c r u d s) on `resource`,
        granular ones included (their `restriction` limits them to part of the type)."""
        return [
            g
            for g in self.grants
            if g.resource in ("*", resource) and interaction in g.interactions
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
        query = m["q"]
        restriction = parse_restriction(m["type"], query) if query else None
        grants.append(Grant(m["ctx"], m["type"], _permissions(m["perm"]), query, restriction))
    return Scopes(tuple(grants))
