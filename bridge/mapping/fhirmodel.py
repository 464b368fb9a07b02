"""What the FHIR model allows at a path, so mapping typos are caught at load.

Uses the fhir.resources R4B models (the closest to R4 for every resource the
gateway serves; see DESIGN.md).
"""

from __future__ import annotations

import difflib
import functools
import typing
from dataclasses import dataclass
from typing import Any

__all__ = ["PathStep", "check_path", "resource_exists"]


@dataclass(frozen=True)
class PathStep:
    name: str
    # None: no [n]; -1: the path ends at a list to fill with `each`; -2: any item
    index: int | None


@functools.cache
def _model(name: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(name)
    except (KeyError, ValueError, ImportError):
        return None


def resource_exists(name: str) -> bool:
    model = _model(name)
    return model is not None and "resourceType" not in getattr(model, "model_fields", {})


def _unwrap(annotation: Any) -> tuple[bool, Any]:
    """(repeats, element class or None for a primitive)."""
    repeats = False
    current = annotation
    for _ in range(6):
        origin = typing.get_origin(current)
        args = [a for a in typing.get_args(current) if a is not type(None)]
        if origin in (list, typing.List):  # noqa: UP006 - the models use typing.List
            repeats = True
            current = args[0]
        elif origin is typing.Annotated:
            return repeats, None
        elif args and origin is not None:
            current = args[0]
        else:
            break
    name = getattr(current, "__name__", "")
    if isinstance(current, type) and name.endswith("Type"):
        return repeats, _model(name[: -len("Type")])
    return repeats, None


def _names(model: Any) -> list[str]:
    return [
        n
        for n in model.model_fields
        if not n.endswith("__ext") and n not in ("fhir_comments", "resource_type")
    ]


def check_path(
    resource: str, steps: list[PathStep], *, leaf: bool, lenient: bool = False
) -> str | None:
    """None when the path exists in the resource, else a message saying what to fix.

    `leaf` is true when a single value is written at the path (not a group).
    `lenient` allows repeating elements without an index (paths that are read
    for searching, where every repetition counts).
    """
    model = _model(resource)
    if model is None:
        return None
    where = resource
    for step in steps:
        if model is None:
            return f"'{where}' is a primitive value and has no element '{step.name}'"
        names = _names(model)
        if step.name not in names:
            hint = difflib.get_close_matches(step.name, names, n=1)
            fix = f"did you mean '{hint[0]}'?" if hint else f"known: {', '.join(names)}"
            return f"{where} has no element '{step.name}'; {fix}"
        repeats, model = _unwrap(model.model_fields[step.name].annotation)
        label = f"{where}.{step.name}" if where != resource else step.name
        if step.index is not None and step.index >= 0 and not repeats:
            return f"'{label}' does not repeat: remove [{step.index}]"
        if step.index is None and repeats and not lenient:
            return f"'{label}' repeats: write {step.name}[0] (or use 'each' on a group)"
        if step.index == -1 and not repeats:
            return f"'{label}' does not repeat, so 'each' cannot fill it"
        where = label
    # A complex element may be set whole from a transform that builds it (a
    # table giving a CodeableConcept): validation of the result checks that.
    del leaf
    return None
