"""Compile a system folder into plain, ready-to-run objects, once, at start-up.

Every legacy path is resolved against the WSDL's element tree into Clark
notation for lxml's `find`; every FHIR path is checked against the FHIR model;
every envelope gets its template. All problems are collected and reported
together, each as `file:line:col: message`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.errors import MappingError, Problem
from bridge.mapping import schema as s
from bridge.mapping.compiled import (
    CompiledCall,
    CompiledResource,
    CompiledStep,
    CompiledSystem,
    Placeholder,
    ValueTemplate,
)
from bridge.mapping.loader import Document, Loc, load_document, load_model
from bridge.mapping.resources import ResourceCompiler, Scope
from bridge.mapping.tables import CodeTable, load_table
from bridge.mapping.transforms import Pipeline, TransformError, build_transform
from bridge.soap.backend import BodyErrors, SessionStyle
from bridge.soap.envelope import EnvelopeTemplate, HeaderTemplate, Value
from bridge.soap.wsdl import ElementInfo, OperationInfo, ServiceDescription, WsdlError, load_wsdl
from bridge.soap.wssecurity import UsernameToken
from bridge.soap.xml import FaultCodePath, compile_local_path
from bridge.urls import http_url

__all__ = ["compile_system"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.\-/,]*)(?:\|([^{}]*))?\}")


class _Compiler(ResourceCompiler):
    def __init__(
        self,
        folder: Path,
        env: Mapping[str, str],
        endpoint: str | None,
        wsdl_cache: Path | None = None,
    ) -> None:
        self.folder = folder
        self.env = env
        self.endpoint_override = endpoint
        self.wsdl_cache = wsdl_cache
        self.problems: list[Problem] = []
        self.session_fills: set[str] = set()  # request elements the session style fills
        self._write_record: ElementInfo | None = None  # for {record.PATH} in later write steps

    # -- helpers -----------------------------------------------------------

    def fail(self, doc: Document, loc: Loc, message: str) -> None:
        self.problems.append(doc.problem(loc, message))

    def resolve(
        self, doc: Document, loc: Loc, base: ElementInfo, path: str, what: str
    ) -> tuple[str, ElementInfo] | None:
        """Resolve `A/B/C` under `base` into a Clark path; report what is missing."""
        if path.strip() in (".", ""):
            return ".", base  # the element itself
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
        self, doc: Document, loc: Loc, raw: s.Scalar, scope: Scope
    ) -> ValueTemplate | None:
        """Compile `text {placeholder|default}`; None when a placeholder is unknown."""
        text = str(raw).lower() if isinstance(raw, bool) else str(raw)
        parts: list[str | Placeholder] = []
        pos = 0
        ok = True
        for m in _PLACEHOLDER.finditer(text):
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            placeholder = self.placeholder(doc, loc, m.group(1), m.group(2), scope)
            if placeholder is None:
                ok = False
            else:
                parts.append(placeholder)
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        return ValueTemplate(tuple(parts)) if ok else None

    def placeholder(
        self, doc: Document, loc: Loc, name: str, default: str | None, scope: Scope
    ) -> Placeholder | None:
        if "," in name:
            # {a,b|default}: the first alternative with a value.
            options = [self.placeholder(doc, loc, n.strip(), None, scope) for n in name.split(",")]
            if any(o is None for o in options):
                return None
            first, *others = [o for o in options if o is not None]
            return dataclasses.replace(first, default=default, alternatives=tuple(others))
        if name in scope.variables:
            return Placeholder(name, "var", default=default)
        if re.fullmatch(r"id\.\d", name) and "id" in scope.variables:
            return Placeholder(name, "var", default=default)  # a part of a dotted id
        head, _, rest = name.partition(".")
        if name == "item" and scope.item is not None:
            return Placeholder(name, "item", path=".", default=default)  # the item's own text
        if head == "item" and scope.item is not None and rest:
            found = self.resolve(doc, loc, scope.item, rest, "{item}") if rest != "." else None
            path = found[0] if found else ("." if rest == "." else None)
            return Placeholder(name, "item", path=path, default=default) if path else None
        if head == "record" and rest and scope.record is not None:
            found = self.resolve(doc, loc, scope.record, rest, "{record}")
            return (
                Placeholder(name, "record", path=rest.strip("/"), default=default)
                if found
                else None
            )
        if head in scope.steps and rest:
            found = self.resolve(doc, loc, scope.steps[head], rest, f"{{{head}}}")
            return Placeholder(name, "step", head, found[0], default) if found else None
        known = [*scope.variables, *(f"{st}.PATH" for st in scope.steps)]
        if scope.item is not None:
            known.append("item.PATH")
        allowed = ", ".join("{" + k + "}" for k in known) or "none here"
        self.fail(doc, loc, f"unknown placeholder '{{{name}}}'; known: {allowed}")
        return None

    def operation(self, doc: Document, loc: Loc, wsdl: ServiceDescription, name: str) -> Any:
        op = wsdl.operations.get(name)
        if op is None and not wsdl.operations:
            self.fail(
                doc,
                loc,
                f"operation '{name}' is not in the WSDL, which offers no SOAP operation at all; "
                "check that its <service> has a port whose <binding> is SOAP and lists the "
                "operations",
            )
        elif op is None:
            known = ", ".join(sorted(wsdl.operations))
            self.fail(doc, loc, f"operation '{name}' is not in the WSDL; known: {known}")
        return op

    def call(
        self,
        doc: Document,
        loc: Loc,
        wsdl: ServiceDescription,
        operation: str,
        request: Mapping[str, s.RequestValue],
        scope: Scope,
    ) -> CompiledCall | None:
        op: OperationInfo | None = self.operation(doc, (*loc, "operation"), wsdl, operation)
        if op is None:
            return None
        values: list[tuple[str, ValueTemplate | tuple[ValueTemplate, ...]]] = []
        complete = True
        for key, raw in request.items():
            vloc = (*loc, "request", key)
            if self.resolve(doc, vloc, op.input, key, f"request of {op.name}") is None:
                complete = False
                continue
            items = raw if isinstance(raw, list) else [raw]
            templates = [self.value_template(doc, vloc, item, scope) for item in items]
            if any(t is None for t in templates):
                complete = False
                continue
            built = [t for t in templates if t is not None]
            values.append((key.strip("/"), tuple(built) if isinstance(raw, list) else built[0]))
        return CompiledCall(EnvelopeTemplate(op), tuple(values)) if complete else None

    def steps(
        self,
        doc: Document,
        loc: Loc,
        wsdl: ServiceDescription,
        spec: s.Steps,
        variables: tuple[str, ...],
        extra: Mapping[str, s.RequestValue] | None = None,
        provided: tuple[str, ...] = (),
        record_from: int = 1,
    ) -> tuple[CompiledStep, ...] | None:
        """Compile `operation`+`request` or `steps`; `extra` joins the first step's request.

        `provided` names first-step request elements filled at run time (a
        written record, optional search parameters). Steps from index
        `record_from` on may use `{record.PATH}` of a write's record."""
        if spec.steps is None:
            assert spec.operation is not None
            raw_steps = [s.Step(operation=spec.operation, request=spec.request)]
            locs: list[Loc] = [loc]
        else:
            raw_steps = list(spec.steps)
            locs = [(*loc, "steps", i) for i in range(len(raw_steps))]
        compiled: list[CompiledStep] = []
        outputs: dict[str, ElementInfo] = {}
        ok = True
        for i, (step, sloc) in enumerate(zip(raw_steps, locs, strict=True)):
            item: ElementInfo | None = None
            for_each = None
            if step.for_each is not None:
                head, _, rest = step.for_each.partition(".")
                if head not in outputs or not rest:
                    known = ", ".join(outputs) or "no named step before this one"
                    self.fail(
                        doc,
                        (*sloc, "for_each"),
                        f"for_each '{step.for_each}' must be STEP.PATH of an earlier named step; "
                        f"known: {known}",
                    )
                    ok = False
                    continue
                found = self.resolve(doc, (*sloc, "for_each"), outputs[head], rest, "for_each")
                if found is None:
                    ok = False
                    continue
                for_each, item = (head, found[0]), found[1]
            request = dict(step.request)
            if i == 0 and extra:
                request = {**extra, **request}
            record = self._write_record if i >= record_from else None
            scope = Scope(variables, dict(outputs), item, record)
            call = self.call(doc, sloc, wsdl, step.operation, request, scope)
            if call is None:
                ok = False
                continue
            filled = {k.split("/")[0] for k in request} | self.session_fills
            if i == 0:
                filled |= set(provided)
            for child in call.template.operation.input.children:
                if child.min_occurs >= 1 and child.name not in filled:
                    self.fail(
                        doc,
                        (*sloc, "operation"),
                        f"request of {call.operation}: the required element '{child.name}' "
                        "is never filled; give it a value in 'request'",
                    )
                    ok = False
            if step.name is not None:
                if step.name in ("item", "params", "record", "id"):
                    self.fail(doc, (*sloc, "name"), f"step name '{step.name}' is reserved")
                    ok = False
                elif step.name in outputs:
                    self.fail(doc, (*sloc, "name"), f"step name '{step.name}' is used twice")
                    ok = False
                outputs[step.name] = call.template.operation.output
            compiled.append(CompiledStep(step.name, call, for_each))
        return tuple(compiled) if ok and compiled else None

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
        misnamed = self.folder / "system.yml"
        if not path.exists() and misnamed.exists():
            message = "mapping files end in .yaml; rename it to system.yaml"
            raise MappingError([Problem(self._display(misnamed), 1, 1, message)])
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
            wsdl = load_wsdl(
                wsdl_path, str(Path(doc.display).parent / spec.wsdl), cache_dir=self.wsdl_cache
            )
        except WsdlError as exc:
            line, col = doc.position(("wsdl",))
            raise MappingError(
                [Problem(doc.display, line, col, f"wsdl: {exc.problem.message} ({spec.wsdl})")]
            ) from exc
        conn = spec.connection
        self.connection_limits(doc, conn, spec.session)
        endpoint = self.endpoint_override or self.env_value(
            doc, ("connection", "endpoint"), conn.endpoint
        )
        endpoint_at = (doc.display, *doc.position(("connection", "endpoint")))
        if endpoint and not self.endpoint_override and not _endpoint_shape(endpoint):
            # Else every request answered 503 ("unavailable") and never said why.
            self.fail(
                doc,
                ("connection", "endpoint"),
                f"{_endpoint_named(conn.endpoint, endpoint, self.env)} is not an http:// or "
                "https:// URL; give the address the legacy system answers SOAP at, like "
                "https://ehr.example.org/soap (or only its path, /soap, where the gateway "
                "config gives the system an origin)",
            )
        username = self.env_value(doc, ("connection", "username"), conn.username) or ""
        password = self.env_value(doc, ("connection", "password"), conn.password) or ""
        session = self.session(doc, wsdl, spec.session, username, password)
        self.session_fills = {
            e
            for e in (
                spec.session.body,
                *(
                    (spec.session.credentials.username, spec.session.credentials.password)
                    if spec.session.credentials
                    else ()
                ),
            )
            if e
        }
        tables = self.tables()
        for file in sorted(self.folder.glob("*.yml")):
            # Not read as a mapping: said, not skipped.
            self.problems.append(
                Problem(
                    self._display(file),
                    1,
                    1,
                    f"mapping files end in .yaml; rename it to {file.stem}.yaml",
                )
            )
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
        body_errors = self.body_errors(doc, wsdl, spec.faults.in_body)
        fault_code_path = self.fault_code_path(doc, spec.faults.code)
        if self.problems or fault_code_path is None:
            raise MappingError(self.problems)
        files = [path, *sorted(self.folder.glob("*.yaml")), *sorted(self.folder.glob("tables/*"))]
        return CompiledSystem(
            name=spec.system,
            folder=self.folder,
            description=spec.description,
            wsdl=wsdl,
            endpoint=endpoint or "",
            endpoint_at=endpoint_at,
            timeout=conn.timeout,
            connect_timeout=conn.connect_timeout,
            max_connections=conn.max_connections,
            session=session,
            max_sessions=spec.session.max_sessions,
            idle_timeout=spec.session.idle_timeout,
            wait_timeout=spec.session.wait_timeout,
            fault_code_path=fault_code_path,
            faults=dict(spec.faults.table),
            resources=resources,
            tables=tables,
            body_errors=body_errors,
            breaker_failures=conn.breaker_failures,
            breaker_cooldown=conn.breaker_cooldown,
            deadline=conn.deadline,
            retries=conn.retries,
            backoff_base=conn.backoff_base,
            backoff_cap=conn.backoff_cap,
            files=tuple(dict.fromkeys(files)),
            fingerprint=hashlib.sha256(
                b"\0".join(
                    [
                        path.read_bytes(),
                        wsdl_path.read_bytes(),
                        *(v.encode() for v in (endpoint or "", username, password)),
                    ]
                )
            ).hexdigest(),
        )

    def connection_limits(self, doc: Document, conn: s.Connection, session: s.SessionSpec) -> None:
        """Timeouts that contradict each other: one of them could never apply."""
        if conn.deadline < conn.timeout:
            self.fail(
                doc,
                ("connection", "deadline"),
                f"connection: deadline {conn.deadline:g} is shorter than timeout "
                f"{conn.timeout:g}, so no call could use its whole timeout; raise deadline "
                f"to at least {conn.timeout:g} or lower timeout",
            )
        if conn.backoff_base > conn.backoff_cap:
            self.fail(
                doc,
                ("connection", "backoff_base"),
                f"connection: backoff_base {conn.backoff_base:g} is above backoff_cap "
                f"{conn.backoff_cap:g}; the cap bounds every pause, so lower backoff_base",
            )
        if conn.backoff_cap >= conn.deadline:
            self.fail(
                doc,
                ("connection", "backoff_cap"),
                f"connection: backoff_cap {conn.backoff_cap:g} is not below deadline "
                f"{conn.deadline:g}, so a pause could use up the whole interaction; "
                "lower backoff_cap",
            )
        if session.wait_timeout > conn.deadline:
            self.fail(
                doc,
                ("session", "wait_timeout"),
                f"session: wait_timeout {session.wait_timeout:g} is longer than "
                f"connection.deadline {conn.deadline:g}, which bounds the wait too; "
                "lower wait_timeout",
            )

    def fault_code_path(self, doc: Document, code: str) -> FaultCodePath | None:
        try:
            return compile_local_path(code)
        except ValueError as exc:
            self.fail(doc, ("faults", "code"), f"faults: code {code!r}: {exc}")
            return None

    def body_errors(
        self, doc: Document, wsdl: ServiceDescription, spec: s.InBodyErrors | None
    ) -> BodyErrors | None:
        """Per operation, the test and the code path, where the answer has both."""
        if spec is None:
            return None
        checks = {}
        for name, op in wsdl.operations.items():
            when_el = _find_path(op.output, spec.when.path)
            code_el = _find_path(op.output, spec.code)
            if when_el is None or code_el is None:
                continue
            condition = self.condition(doc, ("faults", "in_body", "when"), op.output, spec.when)
            code = self.resolve(doc, ("faults", "in_body", "code"), op.output, spec.code, "code")
            if condition is not None and code is not None:
                checks[name] = (condition.holds, code[0])
        if not checks:
            self.fail(
                doc,
                ("faults", "in_body"),
                f"no operation's answer has both '{spec.when.path}' and '{spec.code}'",
            )
        return BodyErrors(checks)

    def session(
        self,
        doc: Document,
        wsdl: ServiceDescription,
        spec: s.SessionSpec,
        username: str,
        password: str,
    ) -> SessionStyle:
        loc: Loc = ("session",)
        common = {
            "kind": spec.style,
            "expired_codes": frozenset(spec.expired_faults),
            "limit_codes": frozenset(spec.limit_faults),
        }
        if spec.style == "none":
            return SessionStyle(**common)  # type: ignore[arg-type]
        if spec.style == "ws-security":
            wss = spec.ws_security or s.WsSecuritySpec()
            token = UsernameToken(
                username,
                password,
                digest=wss.password == "digest",  # noqa: S105 - the kind of password
                nonce=wss.nonce,
                timestamp=wss.timestamp,
                ttl=wss.ttl,
            )
            return SessionStyle(ws_security=token, **common)  # type: ignore[arg-type]
        if spec.style == "credentials":
            assert spec.credentials is not None
            pair = (spec.credentials.username, username, spec.credentials.password, password)
            return SessionStyle(credentials=pair, **common)  # type: ignore[arg-type]
        assert spec.login is not None  # the model checks what each style needs
        login = self.call(
            doc,
            (*loc, "login"),
            wsdl,
            spec.login.operation,
            spec.login.request,
            Scope(("username", "password")),
        )
        login_op = wsdl.operations.get(spec.login.operation)
        token_path: str | None = None
        check = None
        if login_op is not None and spec.login.token is not None:
            found = self.resolve(
                doc, (*loc, "login", "token"), login_op.output, spec.login.token, "token"
            )
            token_path = found[0] if found else None
        if login_op is not None and spec.login.success is not None:
            check = self.condition(
                doc, (*loc, "login", "success"), login_op.output, spec.login.success
            )
        header: HeaderTemplate | None = None
        if spec.style == "header-token":
            assert spec.header is not None
            element = wsdl.elements.get(spec.header.element)
            if element is None:
                known = ", ".join(sorted(wsdl.elements))
                self.fail(
                    doc,
                    (*loc, "header", "element"),
                    f"header element '{spec.header.element}' is not in the WSDL; known: {known}",
                )
            elif self.resolve(
                doc, (*loc, "header", "token"), element, spec.header.token, "header token"
            ):
                header = HeaderTemplate(element, spec.header.token)
        if spec.style == "body-token":
            assert spec.body is not None
            carriers = [op for op in wsdl.operations.values() if op.input.child(spec.body)]
            if not carriers:
                self.fail(
                    doc,
                    (*loc, "body"),
                    f"no operation's request has an element '{spec.body}' to carry the token",
                )
        logout: CompiledCall | None = None
        if spec.logout is not None:
            logout = self.call(
                doc,
                (*loc, "logout"),
                wsdl,
                spec.logout.operation,
                spec.logout.request,
                Scope(("token",)),
            )
        credentials = {"username": username, "password": password}
        login_values = login.request(credentials) if login else {}
        logout_call = logout

        def logout_values(token: str) -> Mapping[str, Value]:
            assert logout_call is not None
            return logout_call.request({"token": token})

        return SessionStyle(
            login=login.template if login else None,
            login_values=login_values,
            token_path=token_path,
            login_check=check.holds if check is not None else None,
            header=header,
            body_element=spec.body,
            cookie=spec.cookie,
            logout=logout.template if logout else None,
            logout_values=logout_values if logout else None,
            **common,  # type: ignore[arg-type]
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


def _endpoint_shape(value: str) -> bool:
    """A full URL, or a path alone (served where the gateway config adds an origin)."""
    if value.startswith("/") and not value.startswith("//"):
        try:
            urlsplit(value)
        except ValueError:
            return False
        return " " not in value
    return http_url(value)


def _endpoint_named(raw: str | s.EnvValue | None, value: str, env: Mapping[str, str]) -> str:
    """The endpoint as a message may name it: an operator's value from the environment
    is named by its variable, not shown."""
    if not isinstance(raw, s.EnvValue):
        return f"endpoint '{value}'"
    if raw.env in env:
        return f"the endpoint from {raw.env}"
    return f"the endpoint's default '{value}'"


def compile_system(
    folder: Path,
    env: Mapping[str, str],
    *,
    endpoint: str | None = None,
    wsdl_cache: Path | None = None,
) -> CompiledSystem:
    """Load, check and compile one system folder. Raises MappingError listing every problem.

    `wsdl_cache`: a folder where what zeep read of the WSDL is kept between starts."""
    return _Compiler(folder, env, endpoint, wsdl_cache).system()


def _find_path(base: ElementInfo, path: str) -> ElementInfo | None:
    current: ElementInfo | None = base
    for step in path.strip("/").split("/"):
        current = current.child(step) if current is not None else None
    return current
