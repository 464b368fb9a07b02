"""Write compiled mappings: a FHIR resource to the legacy record its mapping writes.

Pure functions: no network, no clock, no globals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bridge.mapping.compiled import CompiledField, CompiledResource
from bridge.mapping.fhirmodel import PathStep
from bridge.mapping.runner import BadValue, _Code
from bridge.mapping.transforms import Component, TransformError
from bridge.soap.envelope import branch

__all__ = ["fhir_values", "legacy_record"]

log = logging.getLogger("bridge.mapping")


# `_write` walks a resource's fields the way the mapping reads; `legacy_record`
# runs the same walk compiled once per resource (`_WriteSource`), as `build_resource`
# does: straight-line code with the paths, the `when` paths and the constants as
# literals. `tests/mapping/test_mapping_writer_compiled.py` checks the two agree.


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
    # The first field that writes an element wins.
    branch(tree, parts[:-1]).setdefault(parts[-1], value)


def _tree_append(tree: dict[str, Any], path: str, item: Any) -> None:
    parts = path.split("/")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node.setdefault(parts[-1], []).append(item)


def _label(f: CompiledField) -> str:
    return ".".join(s.name for s in f.steps)


def _group_writes(f: CompiledField) -> bool:
    return f.writes and any(c.writes or c.is_group for c in f.children)


def _write(tree: dict[str, Any], fields: tuple[CompiledField, ...], node: Any) -> None:
    for f in fields:
        if f.is_group:
            if not _group_writes(f):
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
            if not _anywhere(tree, f, node):
                raise


def _anywhere(tree: dict[str, Any], f: CompiledField, node: Any) -> bool:
    """Write the first item the transform accepts; False when it accepts none.

    `participant[0].actor` names a role, not a position: the first item of the
    list that the transform accepts is the one meant.
    """
    anywhere = [PathStep(s.name, -2 if s.index == 0 else s.index) for s in f.steps]
    for candidate in fhir_values(node, anywhere):
        try:
            _put(tree, f.local or "", _to_legacy(f, candidate))
            return True
        except BadValue:
            continue
    return False


class _Joined:
    """The components of one delimited legacy element, as fields write them."""

    def __init__(self, separator: str) -> None:
        self.separator = separator
        self.parts: dict[int, str] = {}

    def text(self) -> str:
        size = max(self.parts) + 1 if self.parts else 0
        return self.separator.join(self.parts.get(i, "") for i in range(size))


def _bad(f: CompiledField, exc: TransformError) -> BadValue:
    return BadValue(f"{_label(f)}: {exc}")


def _to_legacy(f: CompiledField, value: Any) -> Any:
    try:
        legacy = f.pipeline.to_legacy(value)
    except TransformError as exc:
        raise _bad(f, exc) from None
    return _legacy_text(legacy)


def _legacy_text(legacy: Any) -> Any:
    """What a transform gave, as the legacy record holds it: text or a Component."""
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


_MISSING = object()  # a path without a value (a value may be None: `[null]`)


def _first(node: Any, steps: Sequence[PathStep]) -> Any:
    """The first value at a FHIR path, or _MISSING: where a compiled path meets a list."""
    values = fhir_values(node, steps)
    return values[0] if values else _MISSING


class _WriteSource(_Code):
    """Python source for `_write` over one resource's fields, built once.

    Each field becomes straight-line code: its FHIR path followed key by key
    (a list on the way hands the path to `_first`), its `when` read from the
    record so far, its transform called directly, its element set by literal
    keys. `each` groups call `_write` for that one field. The function returns
    whether the record may hold what `_finish` turns into text (joined
    components, `each` lists); a record of plain text needs no finishing.
    """

    def fields(self, depth: int, fields: tuple[CompiledField, ...], node: str) -> None:
        for f in fields:
            if f.is_group:
                if _group_writes(f):
                    self.guarded(depth, f, node, self.group)
            elif f.writes and f.local is not None:
                self.guarded(depth, f, node, self.leaf)

    def guarded(
        self,
        depth: int,
        f: CompiledField,
        node: str,
        body: Callable[[int, CompiledField, str], None],
    ) -> None:
        when = f.when
        if not f.local_when or when is None or when.exists is True:  # True holds on writes
            body(depth, f, node)
            return
        parts = f.local_when.split("/")
        self.emit(depth, f"w = tree.get({parts[0]!r})")
        for part in parts[1:]:
            # The record is made of dicts, lists, text and _Joined: dict stands for Mapping.
            self.emit(depth, f"w = w.get({part!r}) if isinstance(w, dict) else None")
        # `CompiledWhen.test`, inline: present is text that is not blank.
        if when.exists is False:
            self.emit(depth, "if not (isinstance(w, str) and w.strip()):")
        else:  # `equals` / `in`
            values = self.name(when.values or frozenset(), "V")
            self.emit(depth, f"if isinstance(w, str) and (w := w.strip()) and w in {values}:")
        before = len(self.lines)
        body(depth + 1, f, node)
        if len(self.lines) == before:  # a field that writes nothing after all
            self.emit(depth + 1, "pass")

    def group(self, depth: int, f: CompiledField, node: str) -> None:
        if f.each is not None and f.local_each is not None:
            self.emit(depth, f"_write(tree, {self.name((f,), 'F')}, {node})")
            self.emit(depth, "j = True")
            return
        self.first(depth, f.steps, node)
        self.count += 1
        inner = f"n{self.count}"
        self.emit(depth, "if isinstance(v, dict):")
        self.emit(depth + 1, f"{inner} = v")
        before = len(self.lines)
        self.fields(depth + 1, f.children, inner)
        if len(self.lines) == before:
            self.emit(depth + 1, "pass")

    def leaf(self, depth: int, f: CompiledField, node: str) -> None:
        assert f.local is not None
        if f.constant is not None:  # a legacy constant, written as it is
            self.store(depth, f.local, repr(str(f.constant)))
            return
        if not (f.steps and f.steps[0].name):
            return
        self.first(depth, f.steps, node)
        self.emit(depth, "if v is not _MISSING:")
        depth += 1
        steps = f.pipeline.steps
        if steps:
            call = self.name(steps[0].to_legacy if len(steps) == 1 else f.pipeline.to_legacy, "T")
            self.emit(depth, "try:")
            self.emit(depth + 1, f"v = {call}(v)")
            self.emit(depth, "except TransformError as exc:")
            field = self.name(f, "F")
            self.emit(depth + 1, f"if not _anywhere(tree, {field}, {node}):")
            self.emit(depth + 2, f"raise _bad({field}, exc) from None")
            self.emit(depth + 1, "j = True")
            self.emit(depth, "else:")
            depth += 1
        self.emit(depth, "if type(v) is str:")
        self.store(depth + 1, f.local, "v")
        self.emit(depth, "else:")
        self.emit(depth + 1, f"_put(tree, {f.local!r}, _legacy_text(v))")
        self.emit(depth + 1, "j = True")

    def first(self, depth: int, steps: tuple[PathStep, ...], node: str) -> None:
        """`v = ` the first value at `steps` from `node` (a dict), or _MISSING."""
        if not steps:
            self.emit(depth, f"v = {node}")
            return
        self.emit(depth, f"v = {node}.get({steps[0].name!r})")
        self.step(depth, steps, 1, node, self.name(steps, "S"))

    def step(self, depth: int, steps: tuple[PathStep, ...], i: int, node: str, path: str) -> None:
        # `v` is the value at steps[i - 1]; a list anywhere leaves the path to `_first`.
        if i == len(steps):
            self.emit(depth, "if v is None:")
            self.emit(depth + 1, "v = _MISSING")
            self.emit(depth, "elif isinstance(v, list):")
            self.emit(depth + 1, f"v = _first({node}, {path})")
            return
        self.emit(depth, "if isinstance(v, dict):")
        self.emit(depth + 1, f"v = v.get({steps[i].name!r})")
        self.step(depth + 1, steps, i + 1, node, path)
        self.emit(depth, "elif isinstance(v, list):")
        self.emit(depth + 1, f"v = _first({node}, {path})")
        self.emit(depth, "else:")  # None, or a value where an object was needed
        self.emit(depth + 1, "v = _MISSING")

    def store(self, depth: int, local: str, value: str) -> None:
        """`_tree_set(tree, local, value)` with the path's keys as literals."""
        *parents, last = local.split("/")
        target = "tree"
        for i, part in enumerate(parents):
            child = f"t{i}"
            self.emit(depth, f"{child} = {target}.get({part!r})")
            self.emit(depth, f"if not isinstance({child}, dict):")
            self.emit(depth + 1, f"{child} = {target}[{part!r}] = {{}}")
            target = child
        self.emit(depth, f"{target}.setdefault({last!r}, {value})")


_Writer = Callable[[dict[str, Any], Any], bool]


def _compile_writer(fields: tuple[CompiledField, ...], label: str) -> _Writer:
    source = _WriteSource()
    whole = source.name(fields, "F")
    source.emit(1, "if not isinstance(node, dict):")
    source.emit(2, f"_write(tree, {whole}, node)")
    source.emit(2, "return True")
    source.emit(1, "j = False")
    source.fields(1, fields, "node")
    source.emit(1, "return j")
    code = "def write(tree, node):\n" + "\n".join(source.lines) + "\n"
    namespace: dict[str, Any] = {
        "_MISSING": _MISSING,
        "_anywhere": _anywhere,
        "_bad": _bad,
        "_first": _first,
        "_legacy_text": _legacy_text,
        "_put": _put,
        "_write": _write,
        "TransformError": TransformError,
        **source.names,
    }
    exec(compile(code, f"<mapping writes {label}>", "exec"), namespace)  # noqa: S102 - our own code
    writer: _Writer = namespace["write"]
    return writer


def legacy_record(resource: CompiledResource, fhir: Mapping[str, Any]) -> dict[str, Any]:
    """The legacy record (a tree of element values) a FHIR resource writes."""
    writer: _Writer | None = resource.__dict__.get("_writer")
    if writer is None:
        # Kept on the compiled resource, which a reload replaces with its mapping.
        writer = _compile_writer(resource.fields, resource.file or resource.type)
        resource.__dict__["_writer"] = writer
    tree: dict[str, Any] = {}
    if writer(tree, fhir):
        finished: dict[str, Any] = _finish(tree)
        return finished
    return tree


# -- search ------------------------------------------------------------------------
