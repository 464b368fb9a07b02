"""Run compiled mappings: legacy XML to FHIR, and search values to legacy criteria
(FHIR to a legacy record: `bridge.mapping.writer`).

Pure functions: no network, no clock, no globals.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping, Sequence
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
from bridge.mapping.transforms import TransformError

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
    prefix: str | None = None  # dates: eq, ge, gt, le, lt


class NoMatch(Exception):
    """The criteria can match nothing in the legacy system (a foreign code system)."""


class BadValue(ValueError):
    """A value the legacy form cannot express. The message names the element, not the value."""


# -- legacy to FHIR ----------------------------------------------------------------
#
# Each resource's fields are planned once (`_plan`, kept on the compiled
# resource): what kind of field it is, a direct key for one-step paths, the
# record's child element a source reads, and for groups the leading constant
# children built once. A build then writes only what has a value, so nothing
# needs compacting afterwards: values are set only when present, groups only
# when they hold something, and the few lists with holes (`given[1]` without
# `given[0]`) are closed at the end.

_EACH, _GROUP, _JOINED, _TEMPLATE, _CONSTANT, _SOURCE = range(6)


class _Op:
    """One field of a plan."""

    __slots__ = (
        "base",
        "child",
        "children",
        "convert",
        "f",
        "key",
        "kind",
        "steps",
        "when",
        "when_child",
    )

    def __init__(self, f: CompiledField) -> None:
        self.f = f
        self.steps = f.steps
        first = f.steps[0] if f.steps else None
        self.key = first.name if len(f.steps) == 1 and first and first.index is None else None
        self.when = f.when
        self.when_child = _child(f.when.path) if f.when is not None else None
        self.convert = f.pipeline.to_fhir if f.pipeline.steps else None
        self.child = _child(f.source) if f.source is not None else None
        self.base: dict[str, Any] | None = None
        self.children: tuple[_Op, ...] = ()
        if f.children:
            self.kind = _EACH if f.each is not None else _GROUP
        elif f.sources:
            self.kind = _JOINED
        elif f.source is None:
            self.kind = _TEMPLATE if f.template is not None else _CONSTANT
        else:
            self.kind = _SOURCE


def _child(path: str) -> str | None:
    """The tag when `path` is one child element deep (read from the texts by tag)."""
    return path if path != "." and "/" not in path else None


def _is_constant(f: CompiledField) -> bool:
    return (
        f.when is None
        and not f.children
        and not f.sources
        and f.source is None
        and f.template is None
        and f.constant is not None
    )


def _plan(fields: tuple[CompiledField, ...]) -> tuple[_Op, ...]:
    ops = []
    for f in fields:
        if not f.reads:
            continue
        op = _Op(f)
        if op.kind == _GROUP:
            # The leading constant children are the same in every record: built
            # once here, copied per record (the answer is the client's to keep).
            children = [c for c in f.children if c.reads]
            lead = 0
            while lead < len(children) and _is_constant(children[lead]):
                lead += 1
            if lead:
                base: dict[str, Any] = {}
                holes: list[list[Any]] = []
                for c in children[:lead]:
                    _set(base, c.steps, _copy(c.constant), holes)
                _close(holes)
                op.base = base
            op.children = _plan(tuple(children[lead:]))
        elif op.kind == _EACH:
            op.children = _plan(f.children)
        ops.append(op)
    return tuple(ops)


def _copy(value: Any) -> Any:
    """A fresh copy of a container value without empty groups or None (scalars as they are)."""
    kind = type(value)
    if kind is dict:
        out = {}
        for k, v in value.items():
            if v is None:
                continue
            vk = type(v)
            if vk is dict or vk is list:
                v = _copy(v)
                if not v:
                    continue
            out[k] = v
        return out
    if kind is list:
        items = []
        for v in value:
            if v is None:
                continue
            vk = type(v)
            if vk is dict or vk is list:
                v = _copy(v)
                if not v:
                    continue
            items.append(v)
        return items
    return value


def _set(target: dict[str, Any], steps: Sequence[PathStep], value: Any, holes: list[Any]) -> None:
    node: Any = target
    last = len(steps) - 1
    for i, step in enumerate(steps):
        name = step.name
        if step.index is None:
            if i == last:
                node[name] = value
                return
            child = node.get(name)
            if child is None:
                child = node[name] = {}
            node = child
            continue
        items = node.get(name)
        if items is None:
            items = node[name] = []
        index = step.index
        if index == -1:  # filled by `each`
            items.extend(value)
            return
        if len(items) <= index:
            if len(items) < index:
                holes.append(items)  # closed by `_close` once the resource is built
            items.extend([None] * (index + 1 - len(items)))
        if i == last:
            items[index] = value
            return
        child = items[index]
        if child is None:
            child = items[index] = {}
        node = child


def _close(holes: list[list[Any]]) -> None:
    for items in holes:
        if None in items:
            items[:] = [v for v in items if v is not None]


def _texts(record: Any) -> dict[str, str | None]:
    """The record's child elements' texts by tag: one pass, instead of an
    ElementPath search per field (most legacy paths are one child deep).

    Children are taken last to first, so a repeated tag keeps its first text.
    Comments and processing instructions come in under their own (callable)
    tags, which no field looks up."""
    return {child.tag: child.text for child in record[::-1]}


def _text(record: Any, texts: dict[str, str | None], path: str) -> str | None:
    if path == ".":
        text: str | None = record.text
        return text
    if "/" in path:
        found: str | None = record.findtext(path)
        return found
    return texts.get(path)


def _fill(
    target: dict[str, Any],
    ops: tuple[_Op, ...],
    record: Any,
    ctx: RunContext,
    texts: dict[str, str | None],
    holes: list[list[Any]],
) -> None:
    for op in ops:
        when = op.when
        if when is not None:
            tag = op.when_child
            found = texts.get(tag) if tag is not None else _text(record, texts, when.path)
            if not when.test(found):
                continue
        kind = op.kind
        f = op.f
        if kind == _SOURCE:
            tag = op.child
            text = texts.get(tag) if tag is not None else _text(record, texts, f.source or ".")
            if not text or text.isspace():
                continue
            if op.convert is None:
                value: Any = text
            else:
                try:
                    value = op.convert(text)
                except TransformError as exc:
                    # Bad legacy data costs one element, not the whole resource. The
                    # value itself is not logged: it may be patient data.
                    log.warning("legacy value dropped at %s: %s", f.where, exc)
                    continue
        elif kind == _CONSTANT:
            value = f.constant
        elif kind == _GROUP:
            group: dict[str, Any] = _copy(op.base) if op.base is not None else {}
            _fill(group, op.children, record, ctx, texts, holes)  # the same record
            if not group:
                continue
            if f.resource_type is not None:
                group = {"resourceType": f.resource_type, **group}
            value = group
        elif kind == _EACH:
            items = []
            outer = ctx.position
            assert f.each is not None
            for position, item in enumerate(record.iterfind(f.each), start=1):
                built: dict[str, Any] = {}
                ctx.position = position
                _fill(built, op.children, item, ctx, _texts(item), holes)
                if built:
                    items.append(built)
            ctx.position = outer
            if not items:
                continue
            _set(target, op.steps, items, holes)
            continue
        elif kind == _JOINED:
            parts = [(_text(record, texts, p) or "").strip() for p in f.sources]
            if not all(parts):
                continue
            try:
                value = f.pipeline.to_fhir(parts)
            except TransformError as exc:
                log.warning("legacy value dropped at %s: %s", f.where, exc)
                continue
        else:  # _TEMPLATE
            assert f.template is not None
            ctx.item = record
            value = f.template.render(ctx)
            if value is not None and op.convert is not None:
                try:
                    value = op.convert(value)
                except TransformError as exc:
                    log.warning("value dropped at %s: %s", f.where, exc)
                    continue
        if value is None:
            continue
        vk = type(value)
        if vk is dict or vk is list:
            if kind != _GROUP:
                value = _copy(value)  # transforms and constants may share theirs
            if not value:
                continue
        key = op.key
        if key is not None:
            target[key] = value
        else:
            _set(target, op.steps, value, holes)


_LITERAL_TYPES = (str, int, float, bool)


def _literal(value: Any) -> str | None:
    """Python source that builds `value` afresh, if it is plain JSON data."""
    kind = type(value)
    if kind is dict:
        items = []
        for k, v in value.items():
            text = _literal(v)
            if type(k) is not str or text is None:
                return None
            items.append(f"{k!r}: {text}")
        return "{" + ", ".join(items) + "}"
    if kind is list:
        texts = [_literal(v) for v in value]
        if any(t is None for t in texts):
            return None
        return "[" + ", ".join(t for t in texts if t is not None) + "]"
    if kind in _LITERAL_TYPES and (kind is not float or value == value):
        return repr(value)
    return None


class _Code:
    """Python source being generated: its lines and the objects it names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {}
        self.count = 0

    def name(self, value: Any, prefix: str) -> str:
        self.count += 1
        name = f"{prefix}{self.count}"
        self.names[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)


class _Source(_Code):
    """Python source for a plan: one function per resource, built once.

    Plain fields (a child element's text, through its transforms; constants;
    groups of those) become straight-line code with their constants as
    literals; anything else (`each`, joined values, templates) calls `_fill`
    for that one field. The code does what `_fill` does, field by field.

    A child read by several fields (a name split three ways, the element a
    `when` tests and a field then reads) is looked up once, into a local that
    holds None for blank text.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shared: dict[str, str] = {}  # child tag -> its local

    def share(self, ops: tuple[_Op, ...]) -> None:
        """Look up, before the fields, each child that several of `ops` read."""
        uses: dict[str, int] = {}
        _count_reads(ops, uses)
        for tag, count in uses.items():
            if count > 1:
                self.count += 1
                local = self.shared[tag] = f"t{self.count}"
                self.emit(1, f"{local} = texts.get({tag!r})")
                self.emit(1, f"if {local} and {local}.isspace():")
                self.emit(2, f"{local} = None")

    def store(self, depth: int, op: _Op, target: str, value: str) -> None:
        steps = op.steps
        if op.key is not None:
            self.emit(depth, f"{target}[{op.key!r}] = {value}")
        elif len(steps) == 1 and steps[0].index == 0:
            # `name[0]`: most often the list's first item, made here.
            self.emit(depth, f"if {steps[0].name!r} not in {target}:")
            self.emit(depth + 1, f"{target}[{steps[0].name!r}] = [{value}]")
            self.emit(depth, "else:")
            self.emit(depth + 1, f"_set({target}, {self.name(steps, 'S')}, {value}, holes)")
        elif len(steps) == 1 and steps[0].index is not None and steps[0].index > 0:
            # `name[i]`: most often the item after the ones already there.
            self.emit(depth, f"items = {target}.get({steps[0].name!r})")
            self.emit(depth, f"if items is not None and len(items) == {steps[0].index}:")
            self.emit(depth + 1, f"items.append({value})")
            self.emit(depth, "else:")
            self.emit(depth + 1, f"_set({target}, {self.name(steps, 'S')}, {value}, holes)")
        else:
            self.emit(depth, f"_set({target}, {self.name(steps, 'S')}, {value}, holes)")

    def ops(self, depth: int, ops: tuple[_Op, ...], target: str) -> None:
        for op in ops:
            if op.when is not None:
                if op.when_child is not None:
                    found = f"texts.get({op.when_child!r})"
                else:
                    found = f"_text(record, texts, {op.when.path!r})"
                local = self.shared.get(op.when_child or "")
                if local is not None and op.when.exists is not None:
                    self.emit(depth, f"if {'' if op.when.exists else 'not '}{local}:")
                elif op.when.exists is True:  # `CompiledWhen.test`, inline
                    self.emit(depth, f"if (w := {found}) and not w.isspace():")
                elif op.when.exists is False:
                    self.emit(depth, f"if not (w := {found}) or w.isspace():")
                else:
                    self.emit(depth, f"if {self.name(op.when, 'W')}.test({found}):")
                self.op(depth + 1, op, target)
            else:
                self.op(depth, op, target)

    def op(self, depth: int, op: _Op, target: str) -> None:
        f = op.f
        if op.kind == _SOURCE:
            local = self.shared.get(op.child or "")
            if local is not None:
                self.emit(depth, f"if v := {local}:")
            else:
                if op.child is not None:
                    self.emit(depth, f"v = texts.get({op.child!r})")
                else:
                    self.emit(depth, f"v = _text(record, texts, {f.source!r})")
                self.emit(depth, "if v and not v.isspace():")
            inner = depth + 1
            if op.convert is not None:
                steps = f.pipeline.steps
                # One transform: called directly (Pipeline.to_fhir adds only a loop).
                convert = self.name(steps[0].to_fhir if len(steps) == 1 else op.convert, "C")
                self.emit(inner, "try:")
                self.emit(inner + 1, f"v = {convert}(v)")
                self.emit(inner, "except TransformError as exc:")
                self.emit(inner + 1, f"_dropped({f.where!r}, exc)")
                self.emit(inner + 1, "v = None")
                if not (steps[-1].fresh or steps[-1].scalar):  # others may share theirs
                    self.emit(inner, "if type(v) is dict or type(v) is list:")
                    self.emit(inner + 1, "v = _copy(v) or None")
                self.emit(inner, "if v is not None:")
                inner += 1
            self.store(inner, op, target, "v")
        elif op.kind == _CONSTANT:
            value = f.constant
            if type(value) is dict or type(value) is list:
                value = _copy(value)
                if not value:
                    return
            literal = _literal(value)
            if literal is None:
                literal = f"_copy({self.name(value, 'K')})"
            self.store(depth, op, target, literal)
        elif op.kind == _GROUP:
            self.count += 1
            group = f"g{self.count}"
            base = _literal(op.base) if op.base is not None else "{}"
            if base is None:
                base = f"_copy({self.name(op.base, 'K')})"
            self.emit(depth, f"{group} = {base}")
            self.ops(depth, op.children, group)
            if op.base is None:
                self.emit(depth, f"if {group}:")
                depth += 1
            if f.resource_type is not None:
                self.emit(depth, f"{group} = {{'resourceType': {f.resource_type!r}, **{group}}}")
            self.store(depth, op, target, group)
        else:
            one = self.name((op,), "O")
            self.emit(depth, f"_fill({target}, {one}, record, ctx, texts, holes)")


def _count_reads(ops: tuple[_Op, ...], uses: dict[str, int]) -> None:
    """How often the generated code reads each child of the record, by tag: fields
    that read one (and groups of them) and `when`s that test one for presence."""
    for op in ops:
        when = op.when_child if op.when is not None and op.when.exists is not None else None
        if when is not None:
            uses[when] = uses.get(when, 0) + 1
        if op.kind == _SOURCE and op.child is not None:
            uses[op.child] = uses.get(op.child, 0) + 1
        elif op.kind == _GROUP:
            _count_reads(op.children, uses)


def _dropped(where: str, exc: TransformError) -> None:
    # Bad legacy data costs one element, not the whole resource. The value
    # itself is not logged: it may be patient data.
    log.warning("legacy value dropped at %s: %s", where, exc)


_Builder = Callable[[dict[str, Any], Any, RunContext, dict[str, "str | None"], list[Any]], None]


def _compile(ops: tuple[_Op, ...], label: str) -> _Builder:
    source = _Source()
    source.share(ops)
    source.ops(1, ops, "out")
    body = "\n".join(source.lines) or "    pass"
    code = f"def build(out, record, ctx, texts, holes):\n{body}\n"
    namespace: dict[str, Any] = {
        "_set": _set,
        "_copy": _copy,
        "_text": _text,
        "_fill": _fill,
        "_dropped": _dropped,
        "TransformError": TransformError,
        **source.names,
    }
    exec(compile(code, f"<mapping {label}>", "exec"), namespace)  # noqa: S102 - our own code
    builder: _Builder = namespace["build"]
    return builder


def build_resource(
    resource: CompiledResource, record: etree._Element, ctx: RunContext | None = None
) -> dict[str, Any]:
    """The FHIR resource (a plain dict) for one legacy record."""
    builder: _Builder | None = resource.__dict__.get("_builder")
    if builder is None:
        # Kept on the compiled resource, which a reload replaces with its mapping.
        builder = _compile(_plan(resource.fields), resource.file or resource.type)
        resource.__dict__["_builder"] = builder
    out: dict[str, Any] = {"resourceType": resource.type}
    holes: list[list[Any]] = []
    builder(out, record, ctx or RunContext(), _texts(record), holes)
    if holes:
        _close(holes)
    return out


# -- FHIR to legacy -----------------------------------------------------------------
#
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
                        # Not past the calendar's ends: 0001-01-01 and 9999-12-31 stay.
                        if (shift < 0 and day == datetime.date.min) or (
                            shift > 0 and day == datetime.date.max
                        ):
                            shift = 0
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
