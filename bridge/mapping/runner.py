"""Run compiled mappings: legacy XML to FHIR, FHIR to legacy values.

Pure functions: no network, no clock, no globals.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree

from bridge.mapping.compiled import (
    CompiledField,
    CompiledParam,
    CompiledResource,
    CompiledSearch,
    RunContext,
)
from bridge.mapping.fhirmodel import PathStep
from bridge.mapping.transforms import Component, TransformError

__all__ = [
    "BadValue",
    "Criterion",
    "NoMatch",
    "build_resource",
    "fhir_values",
    "legacy_record",
    "search_values",
]

log = logging.getLogger("bridge.mapping")


@dataclass(frozen=True)
class Criterion:
    """One search parameter value, already parsed by the FHIR layer."""

    name: str
    value: str
    system: str | None = None  # tokens: the part before '|', '' for '|code'
    prefix: str | None = None  # dates: eq, ge, gt, le, lt


class NoMatch(Exception):
    """The criteria can match nothing in the legacy system (a foreign code system)."""


class BadValue(ValueError):
    """A value the legacy form cannot express. The message names the element, not the value."""


# -- legacy to FHIR ----------------------------------------------------------------


def _set(target: dict[str, Any], steps: Sequence[PathStep], value: Any) -> None:
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
    """Drop empty groups and holes left by absent values.

    On the read path for every resource: scalars are not visited, and exact
    type checks keep it cheap (the values are only ever plain dicts and lists).
    """
    kind = type(value)
    if kind is dict:
        out = {}
        for k, v in value.items():
            vk = type(v)
            if vk is dict or vk is list:
                v = _compact(v)
                if not v:
                    continue
            elif v is None:
                continue
            out[k] = v
        return out
    if kind is list:
        items = []
        for v in value:
            vk = type(v)
            if vk is dict or vk is list:
                v = _compact(v)
                if not v:
                    continue
            elif v is None:
                continue
            items.append(v)
        return items
    return value


def _texts(record: Any) -> dict[str, str | None]:
    """The record's child elements' texts by tag: one pass, instead of an
    ElementPath search per field (most legacy paths are one child deep)."""
    texts: dict[str, str | None] = {}
    for child in record:
        tag = child.tag
        if type(tag) is str and tag not in texts:
            texts[tag] = child.text
    return texts


def _text(record: Any, texts: dict[str, str | None], path: str) -> str | None:
    if path == ".":
        text: str | None = record.text
        return text
    if "/" in path:
        found: str | None = record.findtext(path)
        return found
    return texts.get(path)


def _holds(when: Any, record: Any, texts: dict[str, str | None]) -> bool:
    return bool(when.test(_text(record, texts, when.path)))


def _fill(
    target: dict[str, Any],
    fields: tuple[CompiledField, ...],
    record: Any,
    ctx: RunContext,
    texts: dict[str, str | None] | None = None,
) -> None:
    if texts is None:
        texts = _texts(record)
    for f in fields:
        if not f.reads:
            continue
        if f.when is not None and not _holds(f.when, record, texts):
            continue
        if f.children:
            if f.each is not None:
                items = []
                outer = ctx.position
                for position, item in enumerate(record.iterfind(f.each), start=1):
                    built: dict[str, Any] = {}
                    ctx.position = position
                    _fill(built, f.children, item, ctx)
                    items.append(built)
                ctx.position = outer
                _set(target, f.steps, items)
            else:
                group: dict[str, Any] = {}
                _fill(group, f.children, record, ctx, texts)  # the same record
                if group and f.resource_type is not None:
                    group = {"resourceType": f.resource_type, **group}
                _set(target, f.steps, group)
            continue
        if f.sources:
            parts = [(_text(record, texts, p) or "").strip() for p in f.sources]
            if not all(parts):
                continue
            try:
                joined = f.pipeline.to_fhir(parts)
            except TransformError as exc:
                log.warning("legacy value dropped at %s: %s", f.where, exc)
                continue
            _set(target, f.steps, joined)
            continue
        if f.source is None:
            if f.template is not None:
                ctx.item = record
            value = f.template.render(ctx) if f.template is not None else f.constant
            if value is not None and f.template is not None and f.pipeline.steps:
                try:
                    value = f.pipeline.to_fhir(value)
                except TransformError as exc:
                    log.warning("value dropped at %s: %s", f.where, exc)
                    continue
            if value is not None:
                _set(target, f.steps, value)
            continue
        text = _text(record, texts, f.source)
        if not text or text.isspace():
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


def build_resource(
    resource: CompiledResource, record: etree._Element, ctx: RunContext | None = None
) -> dict[str, Any]:
    """The FHIR resource (a plain dict) for one legacy record."""
    out: dict[str, Any] = {"resourceType": resource.type}
    _fill(out, resource.fields, record, ctx or RunContext())
    compacted: dict[str, Any] = _compact(out)
    return compacted


# -- FHIR to legacy -----------------------------------------------------------------


def fhir_values(node: Any, steps: Sequence[PathStep]) -> list[Any]:
    """Every value at a FHIR path; an index picks one item, -1 and -2 every item."""
    current = [node]
    for step in steps:
        nxt: list[Any] = []
        for item in current:
            value = item.get(step.name) if isinstance(item, dict) else None
            if value is None:
                continue
            if isinstance(value, list):
                if step.index is not None and step.index >= 0:
                    if step.index < len(value):
                        nxt.append(value[step.index])
                else:
                    nxt.extend(value)
            else:
                nxt.append(value)
        current = nxt
    return current


def _tree_set(tree: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split("/")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node.setdefault(parts[-1], value)  # the first field that writes an element wins


def _tree_append(tree: dict[str, Any], path: str, item: Any) -> None:
    parts = path.split("/")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node.setdefault(parts[-1], []).append(item)


def _label(f: CompiledField) -> str:
    return ".".join(s.name for s in f.steps)


def _write(tree: dict[str, Any], fields: tuple[CompiledField, ...], node: Any) -> None:
    for f in fields:
        if f.is_group:
            if not f.writes or not any(c.writes or c.is_group for c in f.children):
                continue
            if f.local_when and f.when is not None and not f.when.holds_in_tree(tree, f.local_when):
                continue
            if f.each is not None and f.local_each is not None:
                for item in fhir_values(node, f.steps):
                    sub: dict[str, Any] = {}
                    _write(sub, f.children, item)
                    if set(sub) == {"."}:
                        _tree_append(tree, f.local_each, sub["."])  # the element's own text
                    elif sub:
                        _tree_append(tree, f.local_each, sub)
                continue
            found = fhir_values(node, f.steps)
            if found and isinstance(found[0], dict):
                _write(tree, f.children, found[0])
            continue
        if not f.writes or f.local is None:
            continue
        if f.local_when and f.when is not None and not f.when.holds_in_tree(tree, f.local_when):
            continue
        if f.constant is not None:  # a legacy constant, written as it is
            _tree_set(tree, f.local, str(f.constant))
            continue
        values = fhir_values(node, f.steps) if f.steps and f.steps[0].name else []
        if not values:
            continue
        try:
            _put(tree, f.local, _to_legacy(f, values[0]))
        except BadValue:
            # `participant[0].actor` names a role, not a position: the first
            # item of the list that the transform accepts is the one meant.
            anywhere = [PathStep(s.name, -2 if s.index == 0 else s.index) for s in f.steps]
            for candidate in fhir_values(node, anywhere):
                try:
                    _put(tree, f.local, _to_legacy(f, candidate))
                    break
                except BadValue:
                    continue
            else:
                raise


class _Joined:
    """The components of one delimited legacy element, as fields write them."""

    def __init__(self, separator: str) -> None:
        self.separator = separator
        self.parts: dict[int, str] = {}

    def text(self) -> str:
        size = max(self.parts) + 1 if self.parts else 0
        return self.separator.join(self.parts.get(i, "") for i in range(size))


def _to_legacy(f: CompiledField, value: Any) -> Any:
    try:
        legacy = f.pipeline.to_legacy(value)
    except TransformError as exc:
        raise BadValue(f"{_label(f)}: {exc}") from None
    if isinstance(legacy, Component):
        return legacy
    if isinstance(legacy, bool):
        return "true" if legacy else "false"
    return str(legacy)


def _put(tree: dict[str, Any], path: str, value: Any) -> None:
    if not isinstance(value, Component):
        _tree_set(tree, path, value)
        return
    parts = path.split("/")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    joined = node.get(parts[-1])
    if not isinstance(joined, _Joined):
        joined = node[parts[-1]] = _Joined(value.separator)
    joined.parts.setdefault(value.index, value.value)


def _finish(node: Any) -> Any:
    if isinstance(node, _Joined):
        return node.text()
    if isinstance(node, dict):
        return {k: _finish(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_finish(v) for v in node]
    return node


def legacy_record(resource: CompiledResource, fhir: Mapping[str, Any]) -> dict[str, Any]:
    """The legacy record (a tree of element values) a FHIR resource writes."""
    tree: dict[str, Any] = {}
    _write(tree, resource.fields, fhir)
    finished: dict[str, Any] = _finish(tree)
    return finished


# -- search ------------------------------------------------------------------------


def _table_system(param: CompiledParam) -> str | None:
    for step in param.pipeline.steps:
        table = getattr(step, "table", None)
        if table is not None:
            systems = {e.system for e in table.by_local.values()}
            return systems.pop() if len(systems) == 1 else None
    return None


def _legacy_value(param: CompiledParam, criterion: Criterion) -> str:
    value = criterion.value
    if param.type == "token" and criterion.system is not None:
        # `|code` asks for a code without a system: a plain `code` element (a
        # table's FHIR code) has none; a declared system rules it out.
        expected = param.system or (_table_system(param) if criterion.system else None)
        if expected is not None and criterion.system != expected:
            raise NoMatch()
    if param.type == "reference":
        head, _, tail = value.rpartition("/")
        if head and param.target is not None and head.rsplit("/", 1)[-1] != param.target:
            raise NoMatch()
        value = tail
    if not param.pipeline.steps:
        return value
    try:
        return str(param.pipeline.to_legacy(value))
    except TransformError as exc:
        accepted = param.pipeline.accepted()
        choices = f"; use one of: {', '.join(accepted)}" if accepted else ""
        raise BadValue(f"{criterion.name}: {exc}{choices}") from None


def search_values(
    search: CompiledSearch, criteria: Mapping[str, Sequence[Criterion]]
) -> dict[str, str]:
    """Context values (`params.NAME`, `params.NAME.PREFIX`) for a search.

    Raises NoMatch when nothing can match, BadValue for a value the legacy
    system cannot take.
    """
    values: dict[str, str] = {}
    for name, items in criteria.items():
        param = search.params[name]
        for criterion in items:
            if not param.pushed:
                continue
            if param.prefixes:
                prefix = criterion.prefix or "eq"
                # An inclusive legacy range (From/To) also serves gt, lt and eq:
                # the legacy search is then broader, and a `fhir` filter trims it.
                bounds = {"eq": ("eq", "ge", "le"), "gt": ("gt", "ge"), "lt": ("lt", "le")}
                targets = [b for b in bounds.get(prefix, (prefix,)) if b in param.prefixes]
                if not targets:
                    if param.fhir is None:
                        raise BadValue(f"{name}: the prefix '{prefix}' is not supported here.")
                    continue  # the gateway applies it to the results
                if "T" in criterion.value:
                    # A dateTime (the gateway filters exactly): the legacy day
                    # range is widened a day each way, as local days may differ.
                    day = datetime.date.fromisoformat(criterion.value[:10])
                    for bound in targets:
                        shift = -1 if bound in ("ge", "gt") else 1 if bound in ("le", "lt") else 0
                        wide = Criterion(name, (day + datetime.timedelta(days=shift)).isoformat())
                        values.setdefault(f"params.{name}.{bound}", _legacy_value(param, wide))
                    continue
                legacy = _legacy_value(param, criterion)
                for bound in targets:
                    values.setdefault(f"params.{name}.{bound}", legacy)
            else:
                if criterion.prefix not in (None, "eq"):
                    # The element takes one exact value: a range is left to the
                    # gateway's filter (the parser only lets it through with one).
                    continue
                key = f"params.{param.key}"
                value = _legacy_value(param, criterion)
                if values.get(key, value) != value:
                    raise NoMatch()  # two parameters ask for different values of one element
                values[key] = value
    return values
