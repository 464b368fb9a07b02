"""The compiled form of a system folder: plain objects, ready to run.

`compiler.py` builds these once at start-up; `runner.py` and the gateway use
them per request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.mapping import schema as s
from bridge.mapping.fhirmodel import PathStep
from bridge.mapping.tables import CodeTable
from bridge.mapping.transforms import Pipeline
from bridge.soap.backend import SessionStyle
from bridge.soap.envelope import EnvelopeTemplate, Value
from bridge.soap.wsdl import ServiceDescription
from bridge.soap.xml import FaultCodePath

__all__ = [
    "CompiledCall",
    "CompiledField",
    "CompiledPaging",
    "CompiledParam",
    "CompiledRead",
    "CompiledResource",
    "CompiledSearch",
    "CompiledSystem",
    "CompiledWhen",
    "ValueTemplate",
]


@dataclass(frozen=True)
class ValueTemplate:
    """A request value: a constant, or text with `{name}` placeholders."""

    parts: tuple[tuple[bool, str], ...]  # (is_placeholder, text)

    def render(self, context: Mapping[str, str]) -> str:
        return "".join(context[t] if ph else t for ph, t in self.parts)


@dataclass(frozen=True)
class CompiledCall:
    template: EnvelopeTemplate
    values: tuple[tuple[str, ValueTemplate], ...]

    @property
    def operation(self) -> str:
        return self.template.operation.name

    def request(self, context: Mapping[str, str]) -> dict[str, Value]:
        return {path: v.render(context) for path, v in self.values}


@dataclass(frozen=True)
class CompiledWhen:
    path: str  # Clark path relative to the record
    exists: bool | None
    values: frozenset[str] | None  # equals / in

    def holds(self, record: Any) -> bool:
        text = record.findtext(self.path)
        present = bool(text and text.strip())
        if self.exists is not None:
            return present is self.exists
        return present and text.strip() in (self.values or frozenset())


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

    @property
    def is_group(self) -> bool:
        return bool(self.children)


@dataclass(frozen=True)
class CompiledRead:
    call: CompiledCall
    record: str
    id_pattern: re.Pattern[str] | None


@dataclass(frozen=True)
class CompiledParam:
    name: str
    type: str
    element: str
    pipeline: Pipeline
    system: str | None
    description: str


@dataclass(frozen=True)
class CompiledPaging:
    style: str
    cursor: str | None
    next: CompiledCall | None
    page_size: int | None
    invalid_cursor_codes: frozenset[str]


@dataclass(frozen=True)
class CompiledSearch:
    call: CompiledCall
    params: dict[str, CompiledParam]
    records: str
    total: str | None
    paging: CompiledPaging


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
