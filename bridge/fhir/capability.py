"""The CapabilityStatement, generated from what the loaded mappings declare."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ResourceCapability", "capability_statement"]

_SEARCH_TYPES = {"string": "string", "token": "token", "date": "date"}
_JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class ResourceCapability:
    type: str
    interactions: tuple[str, ...]
    search_params: tuple[tuple[str, str, str], ...] = ()  # (name, type, documentation)
    profiles: tuple[str, ...] = ()
    documentation: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def capability_statement(
    base: str,
    resources: Sequence[ResourceCapability],
    *,
    version: str,
    date: str,
    security: dict[str, Any] | None = None,
) -> dict[str, Any]:
    rest_resources = []
    patches = False
    for r in sorted(resources, key=lambda r: r.type):
        entry: dict[str, Any] = {"type": r.type}
        if r.profiles:
            entry["supportedProfile"] = list(r.profiles)
        if r.documentation:
            entry["documentation"] = r.documentation
        interactions = list(r.interactions)
        if "update" in interactions and "patch" not in interactions:
            # PATCH (JSON Patch) is served wherever update is: the patched resource is
            # updated (bridge/gateway/writes.py).
            interactions.insert(interactions.index("update") + 1, "patch")
        patches = patches or "patch" in interactions
        entry["interaction"] = [{"code": i} for i in interactions]
        entry["versioning"] = "no-version"
        entry["readHistory"] = False
        entry["updateCreate"] = False
        entry.update(r.extra)
        if r.search_params:
            entry["searchParam"] = [
                {"name": n, "type": _SEARCH_TYPES.get(t, t), **({"documentation": d} if d else {})}
                for n, t, d in r.search_params
            ]
        rest_resources.append(entry)
    rest: dict[str, Any] = {"mode": "server"}
    if security:
        rest["security"] = security
    rest["resource"] = rest_resources
    # `POST [base]` takes both kinds of Bundle, whatever the mappings serve.
    rest["interaction"] = [{"code": "transaction"}, {"code": "batch"}]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "FHIR SOAP bridge",
        "kind": "instance",
        "software": {"name": "bridge", "version": version},
        "implementation": {"description": "FHIR gateway over legacy SOAP systems", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        **({"patchFormat": [_JSON_PATCH]} if patches else {}),
        "rest": [rest],
    }
