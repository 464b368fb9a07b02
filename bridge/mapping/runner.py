"""Run compiled mappings: legacy XML to FHIR dicts, FHIR search values to legacy.

Pure functions: no network, no clock, no globals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree

from bridge.mapping.compiled import CompiledField, CompiledParam, CompiledResource, CompiledSearch
from bridge.mapping.transforms import TransformError
from bridge.soap.envelope import Value

__all__ = [
    "BadValue",
    "Criterion",
    "NoMatch",
    "build_resource",
    "search_values",
]

log = logging.getLogger("bridge.mapping")


@dataclass(frozen=True)
class Criterion:
    """One search parameter value, already parsed by the FHIR layer."""

    name: str
    value: str
    system: str | None = None  # tokens: the part before '|', '' for '|code'


class NoMatch(Exception):
    """The criteria can match nothing in the legacy system (a foreign code system)."""


class BadValue(ValueError):
    """A search value the legacy form cannot express. The message names the parameter."""


def _set(target: dict[str, Any], steps: Any, value: Any) -> None:
    node: Any = target
    last = len(steps) - 1
    for i, step in enumerate(steps):
        if step.index is None:
            if i == last:
                node[step.name] = value
                return
            node = node.setdefault(step.name, {})
            continue
        items = node.setdefault(step.name, [])
        if step.index == -1:  # filled by `each`
            items.extend(value)
            return
        while len(items) <= step.index:
            items.append(None)
        if i == last:
            items[step.index] = value
            return
        if items[step.index] is None:
            items[step.index] = {}
        node = items[step.index]


def _compact(value: Any) -> Any:
    """Drop empty groups and holes left by absent values."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = _compact(v)
            if v is not None and v != {} and v != []:
                out[k] = v
        return out
    if isinstance(value, list):
        items = [_compact(v) for v in value]
        return [v for v in items if v is not None and v != {} and v != []]
    return value


def _fill(target: dict[str, Any], fields: tuple[CompiledField, ...], record: Any) -> None:
    for f in fields:
        if f.when is not None and not f.when.holds(record):
            continue
        if f.is_group:
            if f.each is not None:
                items = []
                for item in record.iterfind(f.each):
                    built: dict[str, Any] = {}
                    _fill(built, f.children, item)
                    items.append(built)
                _set(target, f.steps, items)
            else:
                group: dict[str, Any] = {}
                _fill(group, f.children, record)
                _set(target, f.steps, group)
            continue
        if f.source is None:
            _set(target, f.steps, f.constant)
            continue
        text = record.findtext(f.source)
        if text is None or not text.strip():
            continue
        try:
            value = f.pipeline.to_fhir(text)
        except TransformError as exc:
            # Bad legacy data costs one element, not the whole resource. The
            # value itself is not logged: it may be patient data.
            log.warning("legacy value dropped at %s: %s", f.where, exc)
            continue
        if value is not None:
            _set(target, f.steps, value)


def build_resource(resource: CompiledResource, record: etree._Element) -> dict[str, Any]:
    """The FHIR resource (a plain dict) for one legacy record."""
    out: dict[str, Any] = {"resourceType": resource.type}
    _fill(out, resource.fields, record)
    compacted: dict[str, Any] = _compact(out)
    return compacted


def _legacy_value(param: CompiledParam, criterion: Criterion) -> str:
    if param.type == "token" and criterion.system is not None:
        if param.system is not None and criterion.system != param.system:
            raise NoMatch()
        if param.system is None and criterion.system not in ("",):
            accepted_system = _table_system(param)
            if accepted_system is not None and criterion.system != accepted_system:
                raise NoMatch()
    if not param.pipeline.steps:
        return criterion.value
    try:
        return str(param.pipeline.to_legacy(criterion.value))
    except TransformError as exc:
        accepted = param.pipeline.accepted()
        choices = f"; use one of: {', '.join(accepted)}" if accepted else ""
        raise BadValue(f"{criterion.name}: {exc}{choices}") from None


def _table_system(param: CompiledParam) -> str | None:
    for step in param.pipeline.steps:
        table = getattr(step, "table", None)
        if table is not None:
            systems = {e.system for e in table.by_local.values()}
            return systems.pop() if len(systems) == 1 else None
    return None


def search_values(search: CompiledSearch, criteria: Mapping[str, Criterion]) -> dict[str, Value]:
    """Request element values for a search. Raises NoMatch or BadValue."""
    values: dict[str, Value] = {path: v.render({}) for path, v in search.call.values}
    for name, criterion in criteria.items():
        param = search.params[name]
        values[param.element] = _legacy_value(param, criterion)
    return values
