"""The compiled form of a system folder: plain objects, ready to run.

`compiler.py` builds these once at start-up; `runner.py` and the gateway use
them per request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from lxml import etree

from bridge.mapping import schema as s
from bridge.mapping.fhirmodel import PathStep
from bridge.mapping.tables import CodeTable
from bridge.mapping.transforms import Pipeline
from bridge.soap.backend import BodyErrors, SessionStyle
from bridge.soap.envelope import EnvelopeTemplate
from bridge.soap.tls import ClientTls
from bridge.soap.wsdl import ServiceDescription
from bridge.soap.xml import FaultCodePath

__all__ = [
    "CompiledCall",
    "CompiledField",
    "CompiledInclude",
    "CompiledLookup",
    "CompiledOperation",
    "CompiledPaging",
    "CompiledParam",
    "CompiledRead",
    "CompiledResource",
    "CompiledSearch",
    "CompiledStep",
    "CompiledSystem",
    "CompiledWhen",
    "CompiledWrite",
    "Placeholder",
    "RunContext",
    "ValueTemplate",
]


@dataclass
class RunContext:
    """What placeholders can read while one interaction runs."""

    values: Mapping[str, str] = field(default_factory=dict)
    steps: dict[str, list[etree._Element]] = field(default_factory=dict)
    item: etree._Element | None = None
    record: Mapping[str, Any] | None = None  # the legacy record a write sends
    position: int = 0  # 1-based place of the current item in an `each` group

    def lookup(self, p: Placeholder) -> str | None:
        if p.kind == "var":
            if p.name == "position":
                return str(self.position) if self.position else None
            head, _, part = p.name.rpartition(".")
            if head == "id" and part.isdigit():  # {id.0}: a part of a dotted id
                parts = self.values.get("id", "").split(".")
                return parts[int(part)] if int(part) < len(parts) else None
            return self.values.get(p.name)
        if p.kind == "record":
            node: Any = self.record
            for part in (p.path or "").split("/"):
                node = node.get(part) if isinstance(node, Mapping) else None
                if isinstance(node, list):
                    node = node[0] if node else None
            return node if isinstance(node, str) else None
        if p.kind == "item":
            if self.item is None or p.path is None:
                return None
            return self.item.findtext(p.path) if p.path != "." else self.item.text
        replies = self.steps.get(p.step or "")
        if not replies or p.path is None:
            return None
        return replies[0].findtext(p.path)


@dataclass(frozen=True)
class Placeholder:
    name: str
    kind: str  # "var", "step" or "item"
    step: str | None = None
    path: str | None = None  # Clark path for step and item values
    default: str | None = None
    alternatives: tuple[Placeholder, ...] = ()  # tried in order when this has no value


@dataclass(frozen=True)
class ValueTemplate:
    """A request value: a constant, or text with `{placeholders}`."""

    parts: tuple[str | Placeholder, ...]

    def render(self, context: RunContext | Mapping[str, str]) -> str | None:
        """The value, or None when a placeholder has no value and no default."""
        ctx = context if isinstance(context, RunContext) else RunContext(values=context)
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = ctx.lookup(part)
            for other in part.alternatives:
                if value:
                    break
                value = ctx.lookup(other)
            if value is None or value == "":
                value = part.default
            if value is None:
                return None
            out.append(value)
        return "".join(out)

    @property
    def constant(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)


@dataclass(frozen=True)
class CompiledCall:
    template: EnvelopeTemplate
    values: tuple[tuple[str, ValueTemplate | tuple[ValueTemplate, ...]], ...]

    @property
    def operation(self) -> str:
        return self.template.operation.name

    def request(self, context: RunContext | Mapping[str, str]) -> dict[str, Any]:
        """Request values by slash path; elements without a value are left out."""
        out: dict[str, Any] = {}
        for path, value in self.values:
            if isinstance(value, tuple):
                items = [v.render(context) for v in value]
                out[path] = [i for i in items if i is not None]
                continue
            rendered = value.render(context)
            if rendered is not None:
                out[path] = rendered
        return out


@dataclass(frozen=True)
class CompiledStep:
    name: str | None
    call: CompiledCall
    for_each: tuple[str, str] | None = None  # (step name, Clark path in its answer)


@dataclass(frozen=True)
class CompiledWhen:
    path: str  # Clark path relative to the record
    exists: bool | None
    values: frozenset[str] | None  # equals / in

    def test(self, text: str | None) -> bool:
        """The test on one legacy value (None when the element is absent)."""
        present = bool(text and text.strip())
        if self.exists is not None:
            return present is self.exists
        return present and text is not None and text.strip() in (self.values or frozenset())

    def holds(self, record: Any) -> bool:
        return self.test(record.findtext(self.path) if self.path != "." else record.text)

    def holds_in_tree(self, tree: Mapping[str, Any], local_path: str) -> bool:
        """The same test on a legacy record being written (a tree of values).

        `exists: true` always holds here (see below); `equals`, `in` and
        `exists: false` test what earlier fields wrote.
        """
        if self.exists is True:
            # On writes, presence comes from the FHIR data: a group guarded by
            # "when X exists" is written whenever the resource has it.
            return True
        node: Any = tree
        for part in local_path.split("/"):
            node = node.get(part) if isinstance(node, Mapping) else None
        return self.test(node if isinstance(node, str) else None)


@dataclass(frozen=True)
class CompiledField:
    steps: tuple[PathStep, ...]
    source: str | None = None  # Clark path relative to the record
    constant: Any = None
    pipeline: Pipeline = field(default_factory=Pipeline)
    when: CompiledWhen | None = None
    each: str | None = None
    children: tuple[CompiledField, ...] = ()
    where: str = ""  # file:line, for messages about bad legacy data
    template: ValueTemplate | None = None  # a constant with placeholders
    local: str | None = None  # the legacy path as written (slash path of local names)
    local_when: str | None = None  # the `when` path as written, for writes
    local_each: str | None = None
    reads: bool = True
    writes: bool = False
    resource_type: str | None = None  # a contained resource's type
    sources: tuple[str, ...] = ()  # several legacy values, joined (reads only)

    @property
    def is_group(self) -> bool:
        return bool(self.children)


@dataclass(frozen=True)
class CompiledParam:
    name: str
    type: str
    pipeline: Pipeline
    system: str | None
    target: str | None
    prefixes: frozenset[str]
    fhir: tuple[PathStep, ...] | None
    pushed: bool  # whether the value goes to the legacy system at all
    required: bool
    description: str
    slot: str = ""  # the parameter whose placeholder carries the value (a shared element)

    @property
    def key(self) -> str:
        return self.slot or self.name


@dataclass(frozen=True)
class CompiledPaging:
    style: str
    cursor: str | None
    next: CompiledCall | None
    page_size: int | None
    first_page: int
    invalid_cursor_codes: frozenset[str]


@dataclass(frozen=True)
class CompiledRead:
    steps: tuple[CompiledStep, ...]
    record: str
    id_pattern: re.Pattern[str] | None
    match: str | None = None  # Clark path, in each record, of the id

    @property
    def call(self) -> CompiledCall:
        return self.steps[-1].call


@dataclass(frozen=True)
class CompiledInclude:
    name: str
    resource: str
    each: str  # Clark path in the record


@dataclass(frozen=True)
class CompiledSearch:
    steps: tuple[CompiledStep, ...]
    params: dict[str, CompiledParam]
    records: str
    total: str | None
    paging: CompiledPaging
    include: dict[str, CompiledInclude] = field(default_factory=dict)

    @property
    def call(self) -> CompiledCall:
        return self.steps[0].call


@dataclass(frozen=True)
class CompiledLookup:
    """Whether a write whose answer was lost happened: calls, then a record that matches."""

    steps: tuple[CompiledStep, ...]
    records: str  # Clark path in the last answer
    match: tuple[tuple[str, ValueTemplate], ...]  # (Clark path in a record, value sent)
    id: str | None  # Clark path, in the record found, of its id
    settle: float

    def found(self, replies: list[etree._Element], ctx: RunContext) -> list[etree._Element]:
        """The records that hold every value the write sent."""
        wanted = [(path, template.render(ctx)) for path, template in self.match]
        return [
            record
            for reply in replies
            for record in reply.iterfind(self.records)
            if all(_same(record.findtext(path), value) for path, value in wanted)
        ]


def _same(found: str | None, sent: str | None) -> bool:
    found = (found or "").strip()
    sent = (sent or "").strip()
    if found == sent:
        return True
    if not found or not sent:
        return False
    try:  # 70 and 70.00 are the same number to a legacy decimal
        return Decimal(found) == Decimal(sent)
    except InvalidOperation:
        return False


@dataclass(frozen=True)
class CompiledWrite:
    steps: tuple[CompiledStep, ...]
    record: str | None  # slash path in the first step's request
    id: str | None  # Clark path in the last answer
    version: tuple[PathStep, ...] | None
    when: tuple[tuple[tuple[PathStep, ...], str], ...]
    conditional: tuple[str, ...]
    respond: str
    id_step: str | None = None  # the named step whose answer holds the id
    answer: tuple[str, str] | None = None  # (records, match) Clark paths in the last answer
    lookup: CompiledLookup | None = None


@dataclass(frozen=True)
class CompiledOperation:
    name: str
    level: str
    changes: bool
    steps: tuple[CompiledStep, ...]
    params: dict[str, tuple[str, bool, Pipeline]]  # name -> (type, required, pipeline)
    outputs: tuple[tuple[str, str, str, Pipeline], ...]  # (name, type, Clark path, pipeline)
    record: str | None
    description: str


@dataclass(frozen=True)
class CompiledResource:
    type: str
    system: str
    file: str
    description: str
    profiles: tuple[str, ...]
    read: CompiledRead | None
    search: CompiledSearch | None
    fields: tuple[CompiledField, ...]
    create: CompiledWrite | None = None
    update: tuple[CompiledWrite, ...] = ()
    delete: CompiledWrite | None = None
    operations: dict[str, CompiledOperation] = field(default_factory=dict)

    def interactions(self) -> list[str]:
        names = []
        if self.read is not None:
            names.append("read")
        if self.update:
            names.append("update")
        if self.delete is not None:
            names.append("delete")
        if self.create is not None:
            names.append("create")
        if self.search is not None:
            names.append("search-type")
        return names


@dataclass(frozen=True)
class CompiledSystem:
    name: str
    folder: Path
    description: str
    wsdl: ServiceDescription
    endpoint: str
    timeout: float
    connect_timeout: float
    max_connections: int
    session: SessionStyle
    max_sessions: int
    idle_timeout: float
    wait_timeout: float
    fault_code_path: FaultCodePath
    faults: dict[str, s.FaultRule]
    resources: dict[str, CompiledResource]
    tables: dict[str, CodeTable]
    body_errors: BodyErrors | None = None
    files: tuple[Path, ...] = ()
    endpoint_at: tuple[str, int, int] = ("", 1, 1)  # system.yaml's endpoint: file, line, col
    # Changes when anything the backend depends on changes (connection,
    # session, WSDL): a reload keeps the sessions of a system whose print holds.
    fingerprint: str = ""
    breaker_failures: int = 5
    breaker_cooldown: float = 10.0
    deadline: float = 30.0
    retries: int = 2
    backoff_base: float = 0.1
    backoff_cap: float = 2.0
    tls: ClientTls | None = None  # own CAs or a client certificate (gateway settings)
