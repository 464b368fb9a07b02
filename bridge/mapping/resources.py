"""Compiling `<Resource>.yaml`: interactions, search parameters and fields.

A mixin of the compiler in `compiler.py`, which owns the shared helpers
(`resolve`, `steps`, `pipeline`, `fail`, ...).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.mapping import schema as s
from bridge.mapping.compiled import (
    CompiledField,
    CompiledInclude,
    CompiledLookup,
    CompiledOperation,
    CompiledPaging,
    CompiledParam,
    CompiledRead,
    CompiledResource,
    CompiledSearch,
    CompiledStep,
    CompiledWhen,
    CompiledWrite,
)
from bridge.mapping.fhirmodel import PathStep, check_path, resource_exists
from bridge.mapping.loader import Document, Loc, load_document, load_model
from bridge.mapping.tables import CodeTable
from bridge.mapping.transforms import Pipeline
from bridge.soap.wsdl import ElementInfo, OperationInfo, ServiceDescription

if TYPE_CHECKING:
    from bridge.mapping.compiled import ValueTemplate

__all__ = ["ResourceCompiler", "Scope"]

_FHIR_PATH = re.compile(r"^[a-z][A-Za-z0-9]*(\[\d+\])?(\.[a-z][A-Za-z0-9]*(\[\d+\])?)*$")
_PAGING_VARS = {
    "cursor": ("cursor",),
    "offset": ("offset", "limit"),
    "page": ("page", "size"),
    "none": (),
}


@dataclass(frozen=True)
class Scope:
    """What placeholders may name at one place of a mapping."""

    variables: tuple[str, ...] = ()
    steps: dict[str, ElementInfo] = field(default_factory=dict)
    item: ElementInfo | None = None
    record: ElementInfo | None = None  # the request element a write fills


class ResourceCompiler:
    # Provided by the compiler class this is mixed into.
    problems: list[Any]
    _current_fields: Sequence[s.FieldSpec] = ()

    def fail(self, doc: Document, loc: Loc, message: str) -> None:
        raise NotImplementedError

    def resolve(
        self, doc: Document, loc: Loc, base: ElementInfo, path: str, what: str
    ) -> tuple[str, ElementInfo] | None:
        raise NotImplementedError

    def steps(
        self,
        doc: Document,
        loc: Loc,
        wsdl: ServiceDescription,
        spec: s.Steps,
        variables: tuple[str, ...],
        extra: dict[str, s.RequestValue] | None = None,
        provided: tuple[str, ...] = (),
        record_from: int = 1,
    ) -> tuple[CompiledStep, ...] | None:
        raise NotImplementedError

    def call(
        self,
        doc: Document,
        loc: Loc,
        wsdl: ServiceDescription,
        operation: str,
        request: dict[str, s.RequestValue],
        scope: Scope,
    ) -> Any:
        raise NotImplementedError

    def pipeline(self, doc: Document, loc: Loc, steps: s.Pipeline, tables: Any) -> Any:
        raise NotImplementedError

    def value_template(
        self, doc: Document, loc: Loc, raw: s.Scalar, scope: Scope
    ) -> ValueTemplate | None:
        raise NotImplementedError

    # -- the file -------------------------------------------------------------

    def resource(
        self, file: Path, system: str, wsdl: ServiceDescription, tables: dict[str, CodeTable]
    ) -> CompiledResource | None:
        doc = load_document(file)
        spec = load_model(doc, s.ResourceFile)
        if not resource_exists(spec.resource):
            self.fail(doc, ("resource",), f"'{spec.resource}' is not a FHIR R4 resource type")
            return None
        if file.stem != spec.resource:
            self.fail(
                doc, ("resource",), f"resource '{spec.resource}' must be in {spec.resource}.yaml"
            )
        record: ElementInfo | None = None
        read: CompiledRead | None = None
        variables: tuple[str, ...] = ()
        if spec.read is not None:
            read, record = self.read(doc, wsdl, spec.read)
            variables = ("id",)
        search: CompiledSearch | None = None
        if spec.search is not None:
            search, search_record = self.search(doc, wsdl, spec.search, tables)
            record = record or search_record
            if search is not None:
                variables = (*variables, *(f"params.{p}" for p in search.params))
        interactions = (spec.read, spec.search, spec.create, spec.update, spec.delete)
        if all(x is None for x in interactions) and not spec.operations:
            self.fail(doc, ("resource",), "a resource needs at least one interaction")
        self._current_fields = spec.fields
        writes = self.writes(doc, wsdl, spec, tables)
        request_record = writes[3]
        fields: tuple[CompiledField, ...] = ()
        base = record or request_record
        if base is not None:
            fields = self.fields(
                doc,
                ("fields",),
                spec.resource,
                [],
                base,
                spec.fields,
                tables,
                Scope(variables),
                request_record,
            )
        operations = {
            name: op
            for name, raw in spec.operations.items()
            if (op := self.operation_spec(doc, wsdl, name, raw, tables, record)) is not None
        }
        return CompiledResource(
            operations=operations,
            type=spec.resource,
            system=system,
            file=doc.display,
            description=spec.description,
            profiles=tuple(spec.profile),
            read=read,
            search=search,
            fields=fields,
            create=writes[0],
            update=writes[1],
            delete=writes[2],
        )

    def _last_output(self, steps: tuple[CompiledStep, ...]) -> OperationInfo:
        return steps[-1].call.template.operation

    def read(
        self, doc: Document, wsdl: ServiceDescription, spec: s.ReadSpec
    ) -> tuple[CompiledRead | None, ElementInfo | None]:
        steps = self.steps(doc, ("read",), wsdl, spec, ("id",))
        if steps is None:
            return None, None
        op = self._last_output(steps)
        found = self.resolve(doc, ("read", "record"), op.output, spec.record, "record")
        pattern = None
        if spec.id_pattern is not None:
            try:
                pattern = re.compile(spec.id_pattern)
            except re.error as exc:
                self.fail(doc, ("read", "id_pattern"), f"not a regular expression: {exc}")
        if found is None:
            return None, None
        match = None
        if spec.match is not None:
            hit = self.resolve(doc, ("read", "match"), found[1], spec.match, "match")
            match = hit[0] if hit else None
        return CompiledRead(steps, found[0], pattern, match), found[1]

    # -- search ------------------------------------------------------------------

    def param(
        self,
        doc: Document,
        loc: Loc,
        name: str,
        p: s.SearchParam,
        resource: str,
        tables: Any,
        referenced: frozenset[str] = frozenset(),
    ) -> tuple[CompiledParam | None, dict[str, s.RequestValue]]:
        pipeline = self.pipeline(doc, (*loc, "transform"), p.transform, tables)
        extra: dict[str, s.RequestValue] = {}
        if p.element is not None:
            extra[p.element] = f"{{params.{name}}}"
        prefixes: frozenset[str] = frozenset()
        if p.prefixes:
            if p.type != "date":
                self.fail(doc, (*loc, "prefixes"), f"param '{name}': only dates take prefixes")
            for prefix, element in p.prefixes.items():
                extra[element] = f"{{params.{name}.{prefix}}}"
            prefixes = frozenset(p.prefixes)
        pushed = bool(extra) or name in referenced
        if pushed and not pipeline.invertible:
            self.fail(
                doc,
                (*loc, "transform"),
                f"param '{name}': a search value must be converted to the legacy "
                "form, and this transform only works one way",
            )
        fhir_path = None
        if p.fhir is not None:
            fhir_path = self.fhir_path(doc, (*loc, "fhir"), p.fhir, each=False, any_index=True)
            if fhir_path is not None:
                message = check_path(resource, list(fhir_path), leaf=True, lenient=True)
                if message:
                    self.fail(doc, (*loc, "fhir"), f"param '{name}': {message}")
        if not pushed and fhir_path is None:
            self.fail(
                doc,
                loc,
                f"param '{name}' goes nowhere: give 'element' or 'prefixes' (sent to the "
                "legacy system) and/or 'fhir' (applied by the gateway)",
            )
            return None, {}
        if p.type == "reference" and p.target is None:
            self.fail(doc, loc, f"param '{name}': a reference parameter needs 'target'")
        elif p.target is not None and not resource_exists(p.target):
            self.fail(
                doc,
                (*loc, "target"),
                f"'{p.target}' is not a FHIR R4 resource type; give the referred type as FHIR "
                "spells it, like Patient",
            )
        compiled = CompiledParam(
            name=name,
            type=p.type,
            pipeline=pipeline,
            system=p.system,
            target=p.target,
            prefixes=prefixes,
            fhir=tuple(fhir_path) if fhir_path else None,
            pushed=pushed,
            required=p.required,
            description=p.description,
        )
        return compiled, extra

    def search(
        self,
        doc: Document,
        wsdl: ServiceDescription,
        spec: s.SearchSpec,
        tables: dict[str, CodeTable],
        resource: str = "",
    ) -> tuple[CompiledSearch | None, ElementInfo | None]:
        loc: Loc = ("search",)
        resource = resource or str(doc.root.get("resource", ""))
        params: dict[str, CompiledParam] = {}
        extra: dict[str, s.RequestValue] = {}
        owners: dict[str, str] = {}
        # Parameters a step names as {params.NAME...} reach the legacy system too.
        texts = [str(v) for v in spec.request.values()] + [
            str(v) for step in spec.steps or [] for v in step.request.values()
        ]
        referenced = frozenset(n for n in spec.params if any(f"{{params.{n}" in t for t in texts))
        first_op = wsdl.operations.get(
            spec.operation or (spec.steps or [s.Step(operation="")])[0].operation
        )
        for name, p in spec.params.items():
            if first_op is not None:
                targets = {"element": p.element} if p.element else {}
                targets.update({f"prefixes.{k}": v for k, v in (p.prefixes or {}).items()})
                bad = False
                for key, element in targets.items():
                    where = (*loc, "params", name, *key.split("."))
                    found = self.resolve(doc, where, first_op.input, element, f"param '{name}'")
                    bad = bad or found is None
                if bad:
                    continue
            param, param_extra = self.param(
                doc, (*loc, "params", name), name, p, resource, tables, referenced
            )
            if param is None:
                continue
            # Parameters that fill the same element share the first one's slot.
            shared = [owners[e] for e in param_extra if e in owners]
            if shared and p.element is not None and not p.prefixes:
                param = dataclasses.replace(param, slot=shared[0])
            else:
                for element in param_extra:
                    owners.setdefault(element, name)
                extra.update({k: v for k, v in param_extra.items() if k not in extra})
            params[name] = param
        variables = (
            *(f"params.{n}" for n in params),
            *(f"params.{n}.{x}" for n, p in params.items() for x in p.prefixes),
            *_PAGING_VARS[spec.paging.style],
        )
        # Elements of optional parameters are filled only when the client asks.
        optional = tuple(k.split("/")[0] for k in extra)
        steps = self.steps(doc, loc, wsdl, spec, variables, extra, optional)
        if steps is None:
            return None, None
        op = self._last_output(steps)
        records = self.resolve(doc, (*loc, "records"), op.output, spec.records, "records")
        total = None
        if spec.total is not None:
            found = self.resolve(doc, (*loc, "total"), op.output, spec.total, "total")
            total = found[0] if found else None
        paging = self.paging(doc, wsdl, spec.paging, op)
        if records is None or paging is None:
            return None, None
        include = {}
        for name, inc in spec.include.items():
            if not resource_exists(inc.resource):
                where = (*loc, "include", name, "resource")
                self.fail(
                    doc,
                    where,
                    f"'{inc.resource}' is not a FHIR R4 resource type; give the included "
                    "type as FHIR spells it, like Observation",
                )
                continue
            found = self.resolve(doc, (*loc, "include", name, "each"), records[1], inc.each, "each")
            if found is not None:
                include[name] = CompiledInclude(name, inc.resource, found[0])
        return CompiledSearch(steps, params, records[0], total, paging, include), records[1]

    def paging(
        self, doc: Document, wsdl: ServiceDescription, spec: s.Paging, op: OperationInfo
    ) -> CompiledPaging | None:
        loc: Loc = ("search", "paging")
        codes = frozenset(spec.invalid_cursor_faults)
        if spec.style != "cursor":
            return CompiledPaging(spec.style, None, None, spec.page_size, spec.first_page, codes)
        assert spec.cursor is not None
        assert spec.next is not None
        cursor = self.resolve(doc, (*loc, "cursor"), op.output, spec.cursor, "cursor")
        nxt = self.call(
            doc, (*loc, "next"), wsdl, spec.next.operation, spec.next.request, Scope(("cursor",))
        )
        if cursor is None or nxt is None:
            return None
        return CompiledPaging("cursor", cursor[0], nxt, spec.page_size, spec.first_page, codes)

    # -- operations ---------------------------------------------------------------

    def operation_spec(
        self,
        doc: Document,
        wsdl: ServiceDescription,
        name: str,
        spec: s.OperationSpec,
        tables: Any,
        record: ElementInfo | None,
    ) -> CompiledOperation | None:
        loc: Loc = ("operations", name)
        variables = (
            *(("id",) if spec.level == "instance" else ()),
            *(f"params.{p}" for p in spec.params),
        )
        steps = self.steps(doc, loc, wsdl, spec, variables)
        if steps is None:
            return None
        out = self._last_output(steps).output
        params: dict[str, tuple[str, bool, Pipeline]] = {
            pname: (
                p.type,
                p.required,
                self.pipeline(doc, (*loc, "params", pname, "transform"), p.transform, tables),
            )
            for pname, p in spec.params.items()
        }
        outputs = []
        for oname, o in spec.outputs.items():
            found = self.resolve(
                doc, (*loc, "outputs", oname, "from"), out, o.from_, f"output '{oname}'"
            )
            if found is None:
                return None
            pipeline = self.pipeline(
                doc, (*loc, "outputs", oname, "transform"), o.transform, tables
            )
            outputs.append((oname, o.type, found[0], pipeline))
        record_path = None
        if spec.record is not None:
            found = self.resolve(doc, (*loc, "record"), out, spec.record, "record")
            if found is None:
                return None
            record_path = found[0]
        return CompiledOperation(
            name=name,
            level=spec.level,
            changes=spec.changes,
            steps=steps,
            params=params,
            outputs=tuple(outputs),
            record=record_path,
            description=spec.description,
        )

    # -- writes ------------------------------------------------------------------

    def writes(
        self, doc: Document, wsdl: ServiceDescription, spec: s.ResourceFile, tables: Any
    ) -> tuple[
        CompiledWrite | None, tuple[CompiledWrite, ...], CompiledWrite | None, ElementInfo | None
    ]:
        record: ElementInfo | None = None
        create = None
        if spec.create is not None:
            create, record = self.write(doc, ("create",), wsdl, spec.create, spec.resource, ())
        updates: list[CompiledWrite] = []
        raw_updates = (
            spec.update
            if isinstance(spec.update, list)
            else ([spec.update] if spec.update is not None else [])
        )
        for i, raw in enumerate(raw_updates):
            uloc: Loc = ("update", i) if isinstance(spec.update, list) else ("update",)
            compiled, rec = self.write(doc, uloc, wsdl, raw, spec.resource, ("id",))
            record = record or rec
            if compiled is not None:
                updates.append(compiled)
        delete = None
        if spec.delete is not None:
            delete, _ = self.write(doc, ("delete",), wsdl, spec.delete, spec.resource, ("id",))
        return create, tuple(updates), delete, record

    def write(
        self,
        doc: Document,
        loc: Loc,
        wsdl: ServiceDescription,
        spec: s.WriteSpec,
        resource: str,
        variables: tuple[str, ...],
    ) -> tuple[CompiledWrite | None, ElementInfo | None]:
        written = _written_elements(spec.record, self._current_fields)
        first_name = spec.operation or (spec.steps[0].operation if spec.steps else "")
        first_op = wsdl.operations.get(first_name)
        self._write_record = first_op.input if first_op is not None else None
        lookup = None
        try:
            steps = self.steps(doc, loc, wsdl, spec, variables, None, written)
            if spec.lookup is not None:
                lookup = self.lookup(doc, (*loc, "lookup"), wsdl, spec, variables)
        finally:
            self._write_record = None
        if steps is None:
            return None, None
        first = steps[0].call.template.operation
        record: ElementInfo | None = first.input  # without `record`, fields fill the request
        if spec.record is not None:
            found = self.resolve(doc, (*loc, "record"), first.input, spec.record, "record")
            record = found[1] if found else None
        new_id = None
        id_step = None
        if spec.id is not None:
            head, _, rest = spec.id.partition(".")
            named = {st.name: st for st in steps if st.name}
            base = self._last_output(steps).output
            id_path = spec.id
            if head in named and rest:
                id_step, base, id_path = head, named[head].call.template.operation.output, rest
            found = self.resolve(doc, (*loc, "id"), base, id_path, "id")
            new_id = found[0] if found else None
        answer = None
        if spec.answer is not None:
            out = self._last_output(steps).output
            recs = self.resolve(
                doc, (*loc, "answer", "records"), out, spec.answer.records, "records"
            )
            match = (
                self.resolve(doc, (*loc, "answer", "match"), recs[1], spec.answer.match, "match")
                if recs
                else None
            )
            if recs and match:
                answer = (recs[0], match[0])
        if spec.respond == "answer" and spec.answer is None:
            self.fail(doc, (*loc, "respond"), "respond: answer needs 'answer'")
        version = None
        if spec.version is not None:
            version = self.fhir_path(doc, (*loc, "version"), spec.version, each=False)
        when: list[tuple[tuple[PathStep, ...], str]] = []
        for key, value in (spec.when or {}).items():
            path = self.fhir_path(doc, (*loc, "when", key), key, each=False)
            if path is not None:
                when.append(
                    (tuple(path), str(value).lower() if isinstance(value, bool) else str(value))
                )
        conditional = tuple(p.strip() for p in (spec.conditional or "").split(",") if p.strip())
        compiled = CompiledWrite(
            steps=steps,
            record=spec.record.strip("/") if spec.record else None,
            id=new_id,
            version=tuple(version) if version else None,
            when=tuple(when),
            conditional=conditional,
            respond=spec.respond,
            id_step=id_step,
            answer=answer,
            lookup=lookup,
        )
        return compiled, record

    def lookup(
        self,
        doc: Document,
        loc: Loc,
        wsdl: ServiceDescription,
        write: s.WriteSpec,
        variables: tuple[str, ...],
    ) -> CompiledLookup | None:
        spec = write.lookup
        assert spec is not None
        steps = self.steps(doc, loc, wsdl, spec, variables, record_from=0)
        if steps is None:
            return None
        out = self._last_output(steps).output
        found = self.resolve(doc, (*loc, "records"), out, spec.records, "records")
        if found is None:
            return None
        base = found[1]
        scope = Scope(variables, record=self._write_record)
        match = []
        for key, raw in spec.match.items():
            mloc = (*loc, "match", key)
            path = self.resolve(doc, mloc, base, key, "match")
            template = self.value_template(doc, mloc, raw, scope)
            if path is None or template is None:
                return None
            match.append((path[0], template))
        new_id = None
        if spec.id is not None:
            hit = self.resolve(doc, (*loc, "id"), base, spec.id, "id")
            if hit is None:
                return None
            new_id = hit[0]
        elif write.id is not None and "id" not in variables:
            self.fail(
                doc,
                loc,
                "lookup: a create's lookup needs 'id', the element of the record found "
                "that holds its id (for the Location of the answer)",
            )
            return None
        return CompiledLookup(steps, found[0], tuple(match), new_id, spec.settle)

    # -- fields --------------------------------------------------------------------

    def fields(
        self,
        doc: Document,
        loc: Loc,
        resource: str,
        prefix: list[PathStep],
        record: ElementInfo,
        specs: list[s.FieldSpec],
        tables: dict[str, CodeTable],
        scope: Scope,
        write_record: ElementInfo | None = None,
    ) -> tuple[CompiledField, ...]:
        compiled: list[CompiledField] = []
        for i, f in enumerate(specs):
            floc = (*loc, i)
            item = self.field(doc, floc, resource, prefix, record, f, tables, scope, write_record)
            if item is not None:
                compiled.append(item)
        return tuple(compiled)

    def field(
        self,
        doc: Document,
        floc: Loc,
        resource: str,
        prefix: list[PathStep],
        record: ElementInfo,
        f: s.FieldSpec,
        tables: dict[str, CodeTable],
        scope: Scope,
        write_record: ElementInfo | None,
    ) -> CompiledField | None:
        legacy_only = f.direction == "write" and f.from_ is not None and f.value is not None
        steps = self.fhir_path(doc, (*floc, "fhir"), f.fhir, each=f.each is not None)
        if steps is None:
            return None
        full = [*prefix, *steps]
        if f.resource is not None:
            if (
                f.fields is None
                or not full
                or full[-1].name != "contained"
                or full[-1].index is None
            ):
                self.fail(
                    doc, (*floc, "resource"), "'resource' names the type of a group at contained[n]"
                )
                return None
            if not resource_exists(f.resource):
                self.fail(
                    doc, (*floc, "resource"), f"'{f.resource}' is not a FHIR R4 resource type"
                )
                return None
        elif not (len(full) == 1 and full[0].name == "id") and not legacy_only:
            message = check_path(resource, full, leaf=f.fields is None)
            if message:
                self.fail(doc, (*floc, "fhir"), f"field '{f.fhir}': {message}")
                return None
        # Reads resolve legacy paths in the answer's record, writes in the
        # request's; a path found in only one of them works one way.
        base = record
        when = (
            self.condition(doc, (*floc, "when"), base, f.when, quiet=write_record)
            if f.when
            else None
        )
        line, _ = doc.position(floc)
        where = f"{doc.display}:{line}"
        reads = f.direction in ("both", "read") and not legacy_only
        writes = f.direction in ("both", "write")
        local_when = f.when.path.strip("/") if f.when else None
        if f.fields is not None:
            each = None
            item_base = base
            item_write = write_record
            if f.each is not None:
                found = self.resolve(doc, (*floc, "each"), base, f.each, f"field '{f.fhir}'")
                if found is None:
                    return None
                if not found[1].repeats:
                    self.fail(
                        doc,
                        (*floc, "each"),
                        f"field '{f.fhir}': '{f.each}' occurs at most once in the WSDL, so "
                        "'each' has nothing to repeat; map it as a group without 'each'",
                    )
                    return None
                each, item_base = found
                if write_record is not None:
                    item_write = _find(write_record, f.each)
            group_prefix = full
            if f.each is not None:
                group_prefix = [*full[:-1], PathStep(full[-1].name, 0)]
            child_resource = resource
            if f.resource is not None:
                child_resource, group_prefix = f.resource, []  # checked as its own type
            children = self.fields(
                doc,
                (*floc, "fields"),
                child_resource,
                group_prefix,
                item_base,
                f.fields,
                tables,
                scope,
                item_write,
            )
            return CompiledField(
                tuple(steps),
                when=when,
                each=each,
                children=children,
                where=where,
                local_each=f.each.strip("/") if f.each else None,
                local_when=local_when,
                reads=reads,
                writes=writes,
                resource_type=f.resource,
            )
        if isinstance(f.from_, list):
            found_all = [
                self.resolve(doc, (*floc, "from", i), base, path, f"field '{f.fhir}'")
                for i, path in enumerate(f.from_)
            ]
            if any(x is None for x in found_all):
                return None
            pipeline = self.pipeline(doc, (*floc, "transform"), f.transform, tables)
            first = pipeline.steps[0].name if pipeline.steps else ""
            if first != "join":
                self.fail(
                    doc,
                    (*floc, "transform"),
                    f"field '{f.fhir}': several 'from' paths need a first transform 'join'",
                )
                return None
            return CompiledField(
                tuple(steps),
                None,
                None,
                pipeline,
                when,
                where=where,
                local_when=local_when,
                reads=reads,
                writes=False,
                sources=tuple(x[0] for x in found_all if x is not None),
            )
        if f.from_ is not None:
            source = None
            if f.from_.strip() == ".":
                source = "."
            elif _find(base, f.from_) is not None or not (
                write_record is not None and _find(write_record, f.from_) is not None
            ):
                found = self.resolve(doc, (*floc, "from"), base, f.from_, f"field '{f.fhir}'")
                if found is None:
                    return None
                if found[1].is_complex and found[1].children:
                    inner = ", ".join(c.name for c in found[1].children)
                    self.fail(
                        doc,
                        (*floc, "from"),
                        f"field '{f.fhir}': '{f.from_}' holds elements, not a value; take one "
                        f"of {inner}, or make a group with 'each'",
                    )
                    return None
                source = found[0]
            pipeline = self.pipeline(doc, (*floc, "transform"), f.transform, tables)
            if f.direction == "write" and not legacy_only and not pipeline.invertible:
                self.fail(
                    doc,
                    (*floc, "transform"),
                    f"field '{f.fhir}' is for writes, but its transform only works one way",
                )
            return CompiledField(
                tuple(steps),
                source,
                f.value if legacy_only else None,
                pipeline,
                when,
                where=where,
                local=f.from_.strip("/"),
                local_when=local_when,
                reads=reads and source is not None,
                writes=writes and (legacy_only or pipeline.invertible),
            )
        template = None
        if isinstance(f.value, str) and "{" in f.value:
            # A value may use the interaction's placeholders, {item.PATH} for the
            # record it is built from, and {position} inside an `each` group.
            local = Scope((*scope.variables, "position"), scope.steps, base, write_record)
            template = self.value_template(doc, (*floc, "value"), f.value, local)
        pipeline = self.pipeline(doc, (*floc, "transform"), f.transform, tables)
        return CompiledField(
            tuple(steps),
            None,
            f.value,
            pipeline,
            when=when,
            where=where,
            template=template,
            local_when=local_when,
            reads=reads,
            writes=False,
        )

    def fhir_path(
        self, doc: Document, loc: Loc, path: str, *, each: bool, any_index: bool = False
    ) -> list[PathStep] | None:
        if path == "":
            return [PathStep("", None)]
        if not _FHIR_PATH.match(path):
            self.fail(doc, loc, f"'{path}' is not a FHIR element path like name[0].family")
            return None
        steps = []
        for part in path.split("."):
            name, _, index = part.partition("[")
            steps.append(PathStep(name, int(index[:-1]) if index else (-2 if any_index else None)))
        if each:
            if steps[-1].index is not None:
                self.fail(doc, loc, f"'each' fills the list itself: write '{steps[-1].name}'")
                return None
            steps[-1] = PathStep(steps[-1].name, -1)
        return steps

    def condition(
        self,
        doc: Document,
        loc: Loc,
        record: ElementInfo,
        spec: s.When,
        quiet: ElementInfo | None = None,
    ) -> CompiledWhen | None:
        if spec.path.strip() == ".":
            path = "."
        elif _find(record, spec.path) is None and quiet is not None and _find(quiet, spec.path):
            path = "-"  # only in the request record: a test for writes only
        else:
            found = self.resolve(doc, (*loc, "path"), record, spec.path, "when")
            if found is None:
                return None
            path = found[0]
        values = None
        if spec.equals is not None:
            values = frozenset([str(spec.equals)])
        elif spec.in_ is not None:
            values = frozenset(str(v) for v in spec.in_)
        return CompiledWhen(path, spec.exists, values)


def _find(base: ElementInfo, path: str) -> ElementInfo | None:
    current: ElementInfo | None = base
    for step in path.strip("/").split("/"):
        current = current.child(step) if current is not None else None
    return current


def _written_elements(record: str | None, fields: Sequence[s.FieldSpec]) -> tuple[str, ...]:
    """First-step request elements a written record fills."""
    if record:
        return (record.strip("/").split("/")[0],)
    names: set[str] = set()

    def walk(specs: Sequence[s.FieldSpec]) -> None:
        for f in specs:
            if f.direction == "read":
                continue
            if isinstance(f.from_, str):
                names.add(f.from_.strip("/").split("/")[0])
            if f.each:
                names.add(f.each.strip("/").split("/")[0])
            if f.fields and not f.each:
                walk(f.fields)

    walk(fields)
    return tuple(names)
