"""`bridge test`: golden cases kept beside a mapping, in `<system>/tests/`.

Reads:  NAME.response.xml (a SOAP answer as the legacy system sends it) and
        NAME.expected.json (the FHIR resource, or a list of them, it must give).
Writes: NAME.request.json (a FHIR resource a client sends) and
        NAME.expected.xml (the SOAP request body element it must produce);
        a NAME starting with `update` uses the update route, else create.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from lxml import etree

from bridge.errors import BackendError, FhirError, Problem
from bridge.mapping.compiled import CompiledField, CompiledResource, CompiledSystem, RunContext
from bridge.mapping.runner import BadValue, build_resource
from bridge.mapping.writer import legacy_record
from bridge.soap.envelope import nest
from bridge.soap.xml import SoapFault, parse_envelope

__all__ = ["CaseResult", "check_samples", "run_cases"]


@dataclass
class CaseResult:
    name: str
    ok: bool
    detail: str = ""


def _pretty_json(value: Any) -> list[str]:
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    return text.splitlines()


def _canonical(element: etree._Element) -> list[str]:
    copy = etree.fromstring(etree.tostring(element), etree.XMLParser(remove_blank_text=True))
    for el in copy.iter():
        if isinstance(el.tag, str):
            el.tag = etree.QName(el).localname
            if el.text is not None and not el.text.strip():
                el.text = None
    etree.cleanup_namespaces(copy)
    return etree.tostring(copy, pretty_print=True, encoding="unicode").splitlines()


def _diff(expected: list[str], actual: list[str], name: str) -> str:
    return "\n".join(
        difflib.unified_diff(expected, actual, f"{name} (expected)", f"{name} (got)", lineterm="")
    )


def _resource_for(system: CompiledSystem, rtype: str) -> CompiledResource | None:
    return system.resources.get(rtype)


def _resource_type(value: Any) -> str:
    first = value[0] if isinstance(value, list) and value else value
    rtype = first.get("resourceType", "") if isinstance(first, dict) else ""
    return rtype if isinstance(rtype, str) else ""


class _Unreadable(Exception):
    """A golden file that cannot be read; `problem` says where, what and how to fix it."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


# The XML parsers' messages end with the position, which the problem gives apart.
_POSITION = re.compile(r", line \d+, column \d+$")
_XML = etree.XMLParser(resolve_entities=False, no_network=True)


def _shown(path: Path) -> str:
    """A path as the mapping loader names files: from the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise _Unreadable(Problem(_shown(path), 1, 1, f"cannot read file: {reason}")) from None


def _xml_problem(path: Path, exc: etree.XMLSyntaxError, holds: str) -> _Unreadable:
    line, column = exc.position
    reason = _POSITION.sub("", exc.msg or "")
    return _Unreadable(
        Problem(_shown(path), line, column, f"not well-formed XML: {reason}; it must hold {holds}")
    )


def _json(path: Path, holds: str) -> Any:
    """The JSON in a golden file; `_Unreadable` names the file, line and column."""
    try:
        return orjson.loads(_read_bytes(path))
    except orjson.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg}; it must hold {holds}"
        raise _Unreadable(Problem(_shown(path), exc.lineno, exc.colno, message)) from None


def _xml(path: Path, holds: str) -> etree._Element:
    try:
        return etree.fromstring(_read_bytes(path), _XML)
    except etree.XMLSyntaxError as exc:
        raise _xml_problem(path, exc, holds) from None


_ANSWER = "the legacy system's SOAP answer, as it sends it"


def _answer(path: Path, system: CompiledSystem, operation: str) -> etree._Element:
    """The first element of a sample answer's SOAP Body (`SoapFault` for a fault)."""
    data = _read_bytes(path)
    try:
        return parse_envelope(data, operation, system.fault_code_path)
    except BackendError as exc:
        if isinstance(exc.__cause__, etree.XMLSyntaxError):
            raise _xml_problem(path, exc.__cause__, _ANSWER) from None
        reason = exc.diagnostics[:1].lower() + exc.diagnostics[1:].rstrip(".")
        message = f"not a SOAP answer the gateway accepts: {reason}; it must hold {_ANSWER}"
        raise _Unreadable(Problem(_shown(path), 1, 1, message)) from None


def _read_case(system: CompiledSystem, name: str, response: Path, expected: Path) -> CaseResult:
    try:
        wanted = _json(
            expected, "the FHIR resource (or a list of them) the mapping builds from the answer"
        )
        rtype = _resource_type(wanted)
        resource = _resource_for(system, rtype)
        if resource is None:
            return CaseResult(name, False, f"{expected}: no mapping for resourceType '{rtype}'")
        reply = _answer(response, system, "golden")
    except _Unreadable as exc:
        return CaseResult(name, False, str(exc.problem))
    except SoapFault as fault:
        return CaseResult(name, False, f"{response}: the answer is a fault ({fault.vendor_code})")
    records: list[etree._Element] = []
    read = resource.read
    if read is not None and reply.tag == read.call.template.operation.output.qname:
        found = reply.find(read.record)
        records = [found] if found is not None else []
    elif resource.search is not None:
        records = list(reply.iterfind(resource.search.records))
    if not records:
        return CaseResult(name, False, f"{response}: no record found in the answer")
    built = [build_resource(resource, r, RunContext()) for r in records]
    got: Any = built if isinstance(wanted, list) else built[0]
    if got == wanted:
        return CaseResult(name, True)
    return CaseResult(name, False, _diff(_pretty_json(wanted), _pretty_json(got), name))


def _write_case(system: CompiledSystem, name: str, request: Path, expected: Path) -> CaseResult:
    try:
        body = _json(request, "the FHIR resource a client sends")
        wanted = _xml(expected, "the SOAP request body element the mapping writes")
    except _Unreadable as exc:
        return CaseResult(name, False, str(exc.problem))
    rtype = _resource_type(body) if isinstance(body, dict) else ""
    resource = _resource_for(system, rtype)
    if resource is None:
        return CaseResult(name, False, f"{request}: no mapping for resourceType '{rtype}'")
    spec = resource.create
    if name.startswith("update") and resource.update:
        from bridge.mapping.writer import fhir_values

        spec = next(
            (
                route
                for route in resource.update
                if all(
                    any(str(v).lower() == want.lower() for v in fhir_values(body, path))
                    for path, want in route.when
                )
            ),
            resource.update[0],
        )
    if spec is None:
        return CaseResult(name, False, f"{request}: {rtype} has no write to test")
    try:
        tree = legacy_record(resource, body)
    except BadValue as exc:
        return CaseResult(name, False, f"{request}: {exc}")
    except FhirError as exc:
        return CaseResult(name, False, f"{request}: {exc.diagnostics}")
    step = spec.steps[0]
    ctx = RunContext(values={"id": str(body.get("id", ""))})
    values: dict[str, Any] = {**({spec.record: tree} if spec.record else tree)}
    values.update(step.call.request(ctx))
    envelope = step.call.template.render(nest(values))
    parsed = parse_envelope(envelope, step.call.operation, None)
    got_lines, wanted_lines = _canonical(parsed), _canonical(wanted)
    if got_lines == wanted_lines:
        return CaseResult(name, True)
    return CaseResult(name, False, _diff(wanted_lines, got_lines, name))


def check_samples(system: CompiledSystem, *, values: bool = False) -> list[Problem]:
    """Every resource the mapping builds from the system's sample answers must be valid FHIR.

    `values`: quote the value refused (for `bridge check`'s own output; a running
    gateway logs the problems, and a sample may hold what the system really sent)."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    problems: list[Problem] = []
    # One line per field and fault: the samples that show it, named in it.
    seen: dict[tuple[str, int, str, str, str], list[tuple[str, str]]] = {}
    folder = system.folder / "tests"
    for response in sorted(folder.glob("*.response.xml")) if folder.is_dir() else []:
        try:
            reply = _answer(response, system, "sample")
        except _Unreadable as exc:
            problems.append(exc.problem)
            continue
        except SoapFault:
            continue
        for resource in system.resources.values():
            records: list[etree._Element] = []
            if (
                resource.read is not None
                and reply.tag == resource.read.call.template.operation.output.qname
            ):
                found = reply.find(resource.read.record)
                records = [found] if found is not None else []
            elif resource.search is not None:
                records = list(reply.iterfind(resource.search.records))
            for record in records:
                built = build_resource(resource, record, RunContext())
                try:
                    get_fhir_model_class(resource.type).model_validate(built)
                except ValidationError as exc:
                    for error in exc.errors()[:5]:
                        file, line, element, why, fix, value = _invalid_field(resource, error)
                        shows = seen.setdefault((file, line, element, why, fix), [])
                        if _shown(response) not in (sample for sample, _ in shows):
                            shows.append((_shown(response), value))
    for (file, line, element, why, fix), shows in seen.items():
        (sample, value), more = shows[0], len(shows) - 1
        samples = f"{sample} and {more} more" if more else sample
        message = f"{element} built from the sample answer {samples} is not valid FHIR"
        shown = value if values else ""
        problems.append(Problem(file, line, 1, f"{message}: {why}{shown}; {fix}"))
    return problems


def _invalid_field(resource: CompiledResource, error: Any) -> tuple[str, int, str, str, str, str]:
    """Where in the mapping an element FHIR refuses comes from: the field that
    builds it (file, line), the element, why, the fix, and the value refused."""
    loc = [p for p in error["loc"] if isinstance(p, int) or not str(p)[:1].isupper()]
    element = resource.type + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    why = str(error["msg"])
    value = error.get("input")
    shown = f" (value {value!r})" if isinstance(value, str | int | float | bool) else ""
    found = _field_for(resource.fields, loc)
    file, line = resource.file, 1
    if found is not None:  # else a required element no field maps
        file, _, number = found.where.rpartition(":")
        line = int(number) if number.isdigit() else 1
    if error["type"] == "missing":
        fix = f"map {element}, which FHIR requires"
    else:
        fix = f"make the field's value or transform give what {element} takes"
    return file, line, element, why, fix, shown


def _field_for(fields: tuple[CompiledField, ...], loc: list[Any]) -> CompiledField | None:
    """The mapped field that builds the element at `loc` (names and list positions, as
    pydantic gives them): the one whose path accounts for most of it, list positions
    that agree first (they shift where an earlier item was left out)."""
    best = _best(fields, loc)
    return best[0] if best is not None else None


def _best(
    fields: tuple[CompiledField, ...], loc: list[Any]
) -> tuple[CompiledField, int, bool] | None:
    """(field, how much of `loc` its path and its children's account for, whether
    every list position agreed), the best of `fields`; None: none leads there."""
    best: tuple[CompiledField, int, bool] | None = None
    for f in fields:
        taken, exact = _leads(f, loc)
        if not taken:
            continue
        found = (f, taken, exact)
        deeper = _best(f.children, loc[taken:]) if f.children else None
        if deeper is not None:
            found = (deeper[0], taken + deeper[1], exact and deeper[2])
        if best is None or found[1:] > best[1:]:
            best = found
    return best


def _leads(f: CompiledField, loc: list[Any]) -> tuple[int, bool]:
    """How many items of `loc` the field's own path accounts for (0: it leads
    elsewhere), and whether the list positions it names agree."""
    i, exact = 0, True
    for step in f.steps:
        if i >= len(loc) or loc[i] != step.name:
            return 0, False
        i += 1
        if i < len(loc) and isinstance(loc[i], int):
            if step.index is not None and step.index >= 0 and loc[i] != step.index:
                exact = False
            i += 1
    return i, exact


def run_cases(system: CompiledSystem) -> list[CaseResult]:
    folder = system.folder / "tests"
    results: list[CaseResult] = []
    if not folder.is_dir():
        return results
    for response in sorted(folder.glob("*.response.xml")):
        name = response.name.removesuffix(".response.xml")
        expected = response.with_name(f"{name}.expected.json")
        if not expected.is_file():
            results.append(CaseResult(name, False, f"{expected} is missing"))
            continue
        results.append(_read_case(system, name, response, expected))
    for request in sorted(folder.glob("*.request.json")):
        name = request.name.removesuffix(".request.json")
        expected = request.with_name(f"{name}.expected.xml")
        if not expected.is_file():
            results.append(CaseResult(name, False, f"{expected} is missing"))
            continue
        results.append(_write_case(system, name, request, expected))
    # An expectation with nothing to check it against would pass unseen.
    for suffix, given in (
        (".expected.json", ".response.xml"),
        (".expected.xml", ".request.json"),
    ):
        for path in sorted(folder.glob(f"*{suffix}")):
            name = path.name.removesuffix(suffix)
            if not path.with_name(name + given).exists():
                detail = f"{path} has no {name}{given} beside it; add it, or remove {path.name}"
                results.append(CaseResult(name, False, detail))
    return results
