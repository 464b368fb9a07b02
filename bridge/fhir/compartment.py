"""Compartments: is a resource about a given patient?

Used to confine `patient/` scopes to the token's own patient. Which elements
tie a resource to the compartment is FHIR's data (CompartmentDefinition), kept
in `data/compartment-patient.json`, not code.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Compartment", "patient_compartment"]

_DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Compartment:
    code: str
    members: dict[str, tuple[tuple[str, ...], ...]]  # type -> paths, split on '.'

    def contains(self, resource: dict[str, Any], owner: str) -> bool:
        """True when `resource` belongs to the compartment of `owner` (an id)."""
        paths = self.members.get(str(resource.get("resourceType")))
        if paths is None:
            return False
        target = f"{self.code}/{owner}"
        for path in paths:
            if path == ("id",):
                if resource.get("id") == owner:
                    return True
                continue
            for ref in _values(resource, path):
                if isinstance(ref, dict) and ref.get("reference") in (target, owner):
                    return True
        return False

    def owners(self, resource: dict[str, Any]) -> set[str]:
        """The ids of every owner whose compartment holds `resource`.

        Called for every resource a request answers (the audit trail's patients):
        a path whose first element the resource lacks costs one lookup."""
        paths = self.members.get(str(resource.get("resourceType")))
        found: set[str] = set()
        if paths is None:
            return found
        prefix = self.code + "/"
        for path in paths:
            value = resource.get(path[0])
            if value is None:
                continue
            if path == ("id",):
                if isinstance(value, str):
                    found.add(value)
                continue
            refs = value if isinstance(value, list) else [value]
            for ref in _walk(refs, path[1:]) if len(path) > 1 else refs:
                if isinstance(ref, dict):
                    target = ref.get("reference")
                    if isinstance(target, str) and target.startswith(prefix):
                        found.add(target[len(prefix) :])
        return found


def _values(node: Any, path: tuple[str, ...]) -> list[Any]:
    return _walk([node], path)


def _walk(current: list[Any], path: tuple[str, ...]) -> list[Any]:
    for name in path:
        nxt: list[Any] = []
        for item in current:
            value = item.get(name) if isinstance(item, dict) else None
            if isinstance(value, list):
                nxt.extend(value)
            elif value is not None:
                nxt.append(value)
        current = nxt
    return current


@functools.cache
def patient_compartment() -> Compartment:
    raw = json.loads((_DATA / "compartment-patient.json").read_text(encoding="utf-8"))
    members = {
        rtype: tuple(tuple(p.split(".")) for p in paths) for rtype, paths in raw["members"].items()
    }
    return Compartment(raw["code"], members)
