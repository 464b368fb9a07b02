"""Compile a system folder into plain, ready-to-run objects, once, at start-up.

Every legacy path is resolved against the WSDL's element tree into Clark
notation for lxml's `find`; every FHIR path is checked against the FHIR model;
every envelope gets its template. All problems are collected and reported
together, each as `file:line:col: message`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.errors import MappingError, Problem
from bridge.mapping import schema as s
from bridge.mapping.compiled import (
    CompiledCall,
    CompiledField,
    CompiledPaging,
    CompiledParam,
    CompiledRead,
    CompiledResource,
    CompiledSearch,
    CompiledSystem,
    CompiledWhen,
    ValueTemplate,
)
from bridge.mapping.fhirmodel import PathStep, check_path, resource_exists
from bridge.mapping.loader import Document, Loc, load_document, load_model
from bridge.mapping.tables import CodeTable, load_table
from bridge.mapping.transforms import Pipeline, TransformError, build_transform
from bridge.soap.backend import SessionStyle
from bridge.soap.envelope import EnvelopeTemplate, HeaderTemplate, Value
from bridge.soap.wsdl import ElementInfo, OperationInfo, ServiceDescription, WsdlError, load_wsdl
from bridge.soap.xml import compile_local_path

__all__ = ["compile_system"]

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_FHIR_PATH = re.compile(r"^[a-z][A-Za-z0-9]*(\[\d+\])?(\.[a-z][A-Za-z0-9]*(\[\d+\])?)*$")


class _Compiler:
    def __init__(self, folder: Path, env: Mapping[str, str], endpoint: str | None) -> None:
        self.folder = folder
        self.env = env
        self.endpoint_override = endpoint
        self.problems: list[Problem] = []

    # -- helpers -----------------------------------------------------------

    def fail(self, doc: Document, loc: Loc, message: str) -> None:
        self.problems.append(doc.problem(loc, message))

    def resolve(
        self, doc: Document, loc: Loc, base: ElementInfo, path: str, what: str
    ) -> tuple[str, ElementInfo] | None:
        """Resolve `A/B/C` under `base` into a Clark path; report what is missing."""
        current = base
        clark: list[str] = []
        for step in path.strip("/").split("/"):
            child = current.child(step)
            if child is None:
                known = ", ".join(c.name for c in current.children) or "no child elements"
                self.fail(
                    doc, loc, f"{what}: element '{step}' is not in {current.name}; known: {known}"
                )
                return None
            clark.append(child.qname)
            current = child
        return "/".join(clark), current

    def value_template(
        self, doc: Document, loc: Loc, raw: s.Scalar, known: tuple[str, ...]
    ) -> ValueTemplate | None:
        text = str(raw).lower() if isinstance(raw, bool) else str(raw)
        parts: list[tuple[bool, str]] = []
        pos = 0
        ok = True
        for m in _PLACEHOLDER.finditer(text):
            if m.start() > pos:
                parts.append((False, text[pos : m.start()]))
            name = m.group(1)
            if name not in known:
                allowed = ", ".join("{" + k + "}" for k in known) or "none here"
                self.fail(doc, loc, f"unknown placeholder '{{{name}}}'; known: {allowed}")
                ok = False
            parts.append((True, name))
            pos = m.end()
        if pos < len(text):
            parts.append((False, text[pos:]))
        return ValueTemplate(tuple(parts)) if ok else None

    def operation(self, doc: Document, loc: Loc, wsdl: ServiceDescription, name: str) -> Any:
        op = wsdl.operations.get(name)
        if op is None:
            known = ", ".join(sorted(wsdl.operations))
            self.fail(doc, loc, f"operation '{name}' is not in the WSDL; known: {known}")
        return op

    def call(
        self,
        doc: Document,
        loc: Loc,
        wsdl: ServiceDescription,
        spec: s.OperationCall,
        known: tuple[str, ...],
    ) -> CompiledCall | None:
        op: OperationInfo | None = self.operation(doc, (*loc, "operation"), wsdl, spec.operation)
        if op is None:
            return None
        values = []
        complete = True
        for key, raw in spec.request.items():
            vloc = (*loc, "request", key)
            if self.resolve(doc, vloc, op.input, key, f"request of {op.name}") is None:
                complete = False
                continue
            template = self.value_template(doc, vloc, raw, known)
            if template is None:
                complete = False
                continue
            values.append((key.strip("/"), template))
        return CompiledCall(EnvelopeTemplate(op), tuple(values)) if complete else None

    def pipeline(self, doc: Document, loc: Loc, steps: s.Pipeline, tables: Any) -> Pipeline:
        built = []
        for i, step in enumerate(steps):
            try:
                built.append(build_transform(step, tables))
            except TransformError as exc:
                self.fail(doc, (*loc, i), f"transform: {exc}")
        return Pipeline(tuple(built))

    def env_value(self, doc: Document, loc: Loc, raw: str | s.EnvValue | None) -> str | None:
        if raw is None or isinstance(raw, str):
            return raw
        value = self.env.get(raw.env, raw.default)
        if value is None:
            self.fail(doc, loc, f"environment variable {raw.env} is not set and has no default")
        return value

    # -- system.yaml ---------------------------------------------------------

    def system(self) -> CompiledSystem:
        path = self.folder / "system.yaml"
        doc = load_document(path)
        spec = load_model(doc, s.SystemFile)
        if spec.system != self.folder.name:
            self.fail(
                doc,
                ("system",),
                f"system '{spec.system}' must be named like its folder '{self.folder.name}'",
            )
        wsdl_path = (self.folder / spec.wsdl).resolve()
        try:
            wsdl = load_wsdl(wsdl_path, str(Path(doc.display).parent / spec.wsdl))
        except WsdlError as exc:
            line, col = doc.position(("wsdl",))
            raise MappingError(
                [Problem(doc.display, line, col, f"wsdl: {exc.problem.message} ({spec.wsdl})")]
            ) from exc
        conn = spec.connection
        endpoint = self.endpoint_override or self.env_value(
            doc, ("connection", "endpoint"), conn.endpoint
        )
        username = self.env_value(doc, ("connection", "username"), conn.username) or ""
        password = self.env_value(doc, ("connection", "password"), conn.password) or ""
        session = self.session(doc, wsdl, spec.session, username, password)
        tables = self.tables()
        resources: dict[str, CompiledResource] = {}
        for file in sorted(self.folder.glob("*.yaml")):
            if file.name == "system.yaml":
                continue
            try:
                res = self.resource(file, spec.system, wsdl, tables)
            except MappingError as exc:
                self.problems.extend(exc.problems)
                continue
            if res is not None:
                resources[res.type] = res
        if self.problems:
            raise MappingError(self.problems)
        return CompiledSystem(
            name=spec.system,
            folder=self.folder,
            description=spec.description,
            wsdl=wsdl,
            endpoint=endpoint or "",
            timeout=conn.timeout,
            connect_timeout=conn.connect_timeout,
            max_connections=conn.max_connections,
            session=session,
            max_sessions=spec.session.max_sessions,
            idle_timeout=spec.session.idle_timeout,
            wait_timeout=spec.session.wait_timeout,
            fault_code_path=compile_local_path(spec.faults.code),
            faults=dict(spec.faults.table),
            resources=resources,
            tables=tables,
        )

    def session(
        self,
        doc: Document,
        wsdl: ServiceDescription,
        spec: s.SessionSpec,
        username: str,
        password: str,
    ) -> SessionStyle:
        if spec.style == "none":
            return SessionStyle(kind="none")
        assert spec.login is not None and spec.header is not None  # checked by the model
        login = self.call(doc, ("session", "login"), wsdl, spec.login, ("username", "password"))
        token_path: str | None = None
        login_op = wsdl.operations.get(spec.login.operation)
        if login_op is not None:
            found = self.resolve(
                doc, ("session", "login", "token"), login_op.output, spec.login.token, "token"
            )
            token_path = found[0] if found else None
        header: HeaderTemplate | None = None
        element = wsdl.elements.get(spec.header.element)
        if element is None:
            known = ", ".join(sorted(wsdl.elements))
            self.fail(
                doc,
                ("session", "header", "element"),
                f"header element '{spec.header.element}' is not in the WSDL; known: {known}",
            )
        elif self.resolve(
            doc, ("session", "header", "token"), element, spec.header.token, "header token"
        ):
            header = HeaderTemplate(element, spec.header.token)
        logout: CompiledCall | None = None
        if spec.logout is not None:
            logout = self.call(doc, ("session", "logout"), wsdl, spec.logout, ("token",))
        credentials = {"username": username, "password": password}
        login_values = login.request(credentials) if login else {}
        logout_call = logout

        def logout_values(token: str) -> Mapping[str, Value]:
            assert logout_call is not None
            return logout_call.request({"token": token})

        return SessionStyle(
            kind=spec.style,
            login=login.template if login else None,
            login_values=login_values,
            token_path=token_path,
            header=header,
            logout=logout.template if logout else None,
            logout_values=logout_values if logout else None,
            expired_codes=frozenset(spec.expired_faults),
            limit_codes=frozenset(spec.limit_faults),
        )

    def tables(self) -> dict[str, CodeTable]:
        tables: dict[str, CodeTable] = {}
        folder = self.folder / "tables"
        for file in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
            display = str(Path(self._display(file)))
            try:
                tables[file.stem] = load_table(file, display)
            except MappingError as exc:
                # Reported once, here; an empty stand-in keeps the mappings that
                # use the table from being reported again.
                self.problems.extend(exc.problems)
                tables[file.stem] = CodeTable(file.stem, display, {}, {})
        return tables

    @staticmethod
    def _display(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    # -- <Resource>.yaml -------------------------------------------------------

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
        if spec.read is not None:
            call = self.call(doc, ("read",), wsdl, spec.read, ("id",))
            op = wsdl.operations.get(spec.read.operation)
            found = (
                self.resolve(doc, ("read", "record"), op.output, spec.read.record, "record")
                if op
                else None
            )
            pattern = None
            if spec.read.id_pattern is not None:
                try:
                    pattern = re.compile(spec.read.id_pattern)
                except re.error as exc:
                    self.fail(doc, ("read", "id_pattern"), f"not a regular expression: {exc}")
            if call and found:
                record = found[1]
                read = CompiledRead(call, found[0], pattern)
        search: CompiledSearch | None = None
        if spec.search is not None:
            search, search_record = self.search(doc, wsdl, spec.search, tables)
            record = record or search_record
        if spec.read is None and spec.search is None:
            self.fail(doc, ("resource",), "a resource needs 'read', 'search' or both")
        fields: tuple[CompiledField, ...] = ()
        if record is not None:
            fields = self.fields(doc, ("fields",), spec.resource, [], record, spec.fields, tables)
        return CompiledResource(
            type=spec.resource,
            system=system,
            file=doc.display,
            description=spec.description,
            profiles=tuple(spec.profile),
            read=read,
            search=search,
            fields=fields,
        )

    def search(
        self,
        doc: Document,
        wsdl: ServiceDescription,
        spec: s.SearchSpec,
        tables: dict[str, CodeTable],
    ) -> tuple[CompiledSearch | None, ElementInfo | None]:
        loc: Loc = ("search",)
        call = self.call(doc, loc, wsdl, spec, ())
        op = wsdl.operations.get(spec.operation)
        if op is None or call is None:
            return None, None
        params: dict[str, CompiledParam] = {}
        for name, p in spec.params.items():
            ploc = (*loc, "params", name)
            if self.resolve(doc, (*ploc, "element"), op.input, p.element, f"param '{name}'"):
                pipeline = self.pipeline(doc, (*ploc, "transform"), p.transform, tables)
                if not pipeline.invertible:
                    self.fail(
                        doc,
                        (*ploc, "transform"),
                        f"param '{name}': a search value must be converted to the legacy "
                        "form, and this transform only works one way",
                    )
                params[name] = CompiledParam(
                    name, p.type, p.element.strip("/"), pipeline, p.system, p.description
                )
        records = self.resolve(doc, (*loc, "records"), op.output, spec.records, "records")
        total = None
        if spec.total is not None:
            found = self.resolve(doc, (*loc, "total"), op.output, spec.total, "total")
            total = found[0] if found else None
        paging = self.paging(doc, wsdl, spec.paging, op)
        if records is None or paging is None:
            return None, None
        return CompiledSearch(call, params, records[0], total, paging), records[1]

    def paging(
        self, doc: Document, wsdl: ServiceDescription, spec: s.Paging, op: OperationInfo
    ) -> CompiledPaging | None:
        loc: Loc = ("search", "paging")
        if spec.style == "none":
            return CompiledPaging("none", None, None, spec.page_size, frozenset())
        assert spec.cursor is not None and spec.next is not None
        cursor = self.resolve(doc, (*loc, "cursor"), op.output, spec.cursor, "cursor")
        nxt = self.call(doc, (*loc, "next"), wsdl, spec.next, ("cursor",))
        if cursor is None or nxt is None:
            return None
        if nxt.template.operation.output.name != op.output.name:
            # The next page is read with the same paths as the first one.
            out = nxt.template.operation.output
            for path in (spec.cursor,):
                self.resolve(doc, (*loc, "next"), out, path, f"{out.name}")
        return CompiledPaging(
            "cursor", cursor[0], nxt, spec.page_size, frozenset(spec.invalid_cursor_faults)
        )

    def fields(
        self,
        doc: Document,
        loc: Loc,
        resource: str,
        prefix: list[PathStep],
        record: ElementInfo,
        specs: list[s.FieldSpec],
        tables: dict[str, CodeTable],
    ) -> tuple[CompiledField, ...]:
        compiled: list[CompiledField] = []
        for i, f in enumerate(specs):
            floc = (*loc, i)
            steps = self.fhir_path(doc, (*floc, "fhir"), f.fhir, each=f.each is not None)
            if steps is None:
                continue
            full = [*prefix, *steps]
            if not (len(full) == 1 and full[0].name == "id"):
                message = check_path(resource, full, leaf=f.fields is None)
                if message:
                    self.fail(doc, (*floc, "fhir"), f"field '{f.fhir}': {message}")
                    continue
            when = self.condition(doc, (*floc, "when"), record, f.when) if f.when else None
            line, _ = doc.position(floc)
            where = f"{doc.display}:{line}"
            if f.fields is not None:
                base = record
                each = None
                if f.each is not None:
                    found = self.resolve(doc, (*floc, "each"), record, f.each, f"field '{f.fhir}'")
                    if found is None:
                        continue
                    each, base = found
                # Children are checked at their full path but compiled relative
                # to the group (for `each`, relative to one item of the list).
                group_prefix = full
                if f.each is not None:
                    group_prefix = [*full[:-1], PathStep(full[-1].name, 0)]
                children = self.fields(
                    doc, (*floc, "fields"), resource, group_prefix, base, f.fields, tables
                )
                compiled.append(
                    CompiledField(
                        tuple(steps), when=when, each=each, children=children, where=where
                    )
                )
            elif f.from_ is not None:
                found = self.resolve(doc, (*floc, "from"), record, f.from_, f"field '{f.fhir}'")
                if found is None:
                    continue
                pipeline = self.pipeline(doc, (*floc, "transform"), f.transform, tables)
                compiled.append(
                    CompiledField(tuple(steps), found[0], None, pipeline, when, where=where)
                )
            else:
                compiled.append(CompiledField(tuple(steps), None, f.value, when=when, where=where))
        return tuple(compiled)

    def fhir_path(self, doc: Document, loc: Loc, path: str, *, each: bool) -> list[PathStep] | None:
        if not _FHIR_PATH.match(path):
            self.fail(doc, loc, f"'{path}' is not a FHIR element path like name[0].family")
            return None
        steps = []
        for part in path.split("."):
            name, _, index = part.partition("[")
            steps.append(PathStep(name, int(index[:-1]) if index else None))
        if each:
            if steps[-1].index is not None:
                self.fail(doc, loc, f"'each' fills the list itself: write '{steps[-1].name}'")
                return None
            steps[-1] = PathStep(steps[-1].name, -1)
        return steps

    def condition(
        self, doc: Document, loc: Loc, record: ElementInfo, spec: s.When
    ) -> CompiledWhen | None:
        found = self.resolve(doc, (*loc, "path"), record, spec.path, "when")
        if found is None:
            return None
        values = None
        if spec.equals is not None:
            values = frozenset([str(spec.equals)])
        elif spec.in_ is not None:
            values = frozenset(str(v) for v in spec.in_)
        return CompiledWhen(found[0], spec.exists, values)


def compile_system(
    folder: Path, env: Mapping[str, str], *, endpoint: str | None = None
) -> CompiledSystem:
    """Load, check and compile one system folder. Raises MappingError listing every problem."""
    return _Compiler(folder, env, endpoint).system()
