"""Envelopes holding many records: equal to zeep's, and byte for byte what the
renderer gave before it was made cheaper (kept below as the reference)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import zeep
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from lxml import etree

from bridge.soap.envelope import EnvelopeTemplate, EnvelopeValueError, HeaderTemplate, escape_text
from bridge.soap.wsdl import ElementInfo, ServiceDescription, load_wsdl
from tests.props import repeatable
from tests.soap.test_soap_envelope import TRICKY, assert_same_envelope, zeep_envelope

EHR_WSDL = Path("wsdl/hospital/ehr.wsdl")
TNS = "urn:hospital:ehr"
_SPEC = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


@pytest.fixture(scope="module")
def desc() -> ServiceDescription:
    return load_wsdl(EHR_WSDL)


@pytest.fixture(scope="module")
def client() -> zeep.Client:
    return zeep.Client(wsdl=str(EHR_WSDL))  # type: ignore[no-untyped-call]


def _reading(i: int, text: str = "") -> dict[str, str]:
    return {
        "TypeCode": "HR",
        "Value": str(60 + i % 40),
        "Unit": "/min",
        "TakenAt": f"11/20/2026 08:00:{i % 60:02d}",
        "DeviceId": f"watch-{i}{text}",
    }


def _reference(template: EnvelopeTemplate, values: Mapping[str, Any]) -> bytes:
    """The renderer as it was (string per element, tag made per element)."""
    by_ns: dict[str, str] = {}

    def tag(qname: str) -> str:
        if not qname.startswith("{"):
            return qname
        ns, local = qname[1:].split("}", 1)
        return f"{by_ns.setdefault(ns, f'ns{len(by_ns)}')}:{local}"

    def render(el: ElementInfo, values: Mapping[str, Any]) -> str:
        parts = []
        for child in el.children:
            value = values.get(child.name)
            if value is None:
                continue
            name = tag(child.qname)
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, Mapping):
                    inner = render(child, item)
                    parts.append(f"<{name}>{inner}</{name}>" if inner else f"<{name}/>")
                elif item is not None:
                    text = str(item)
                    if not all(_xml_char(c) for c in text):
                        raise EnvelopeValueError("value contains characters XML cannot carry")
                    parts.append(f"<{name}>{text.translate(_SPEC)}</{name}>")
        return "".join(parts)

    operation = template.operation
    env = tag("{" + operation.envelope_ns + "}Envelope").split(":")[0]
    body_tag = tag(operation.input.qname)
    body = render(operation.input, values)
    inner = f"<{body_tag}>{body}</{body_tag}>" if body else f"<{body_tag}/>"
    declarations = "".join(f' xmlns:{p}="{ns}"' for ns, p in by_ns.items())
    return (
        f"<?xml version='1.0' encoding='utf-8'?>\n"
        f"<{env}:Envelope{declarations}><{env}:Body>{inner}</{env}:Body></{env}:Envelope>"
    ).encode()


def _xml_char(c: str) -> bool:
    o = ord(c)
    return o in (0x9, 0xA, 0xD) or 0x20 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or o >= 0x10000


def test_envelope_batch_of_readings_equals_zeep(
    desc: ServiceDescription, client: zeep.Client
) -> None:
    readings = [_reading(i, TRICKY[i % len(TRICKY)]) for i in range(100)]
    ours = EnvelopeTemplate(desc.operations["RecordVitals"]).render(
        {"MRN": "100003", "Readings": {"Reading": readings}}
    )

    theirs = zeep_envelope(client, "RecordVitals", MRN="100003", Readings={"Reading": readings})
    assert_same_envelope(ours, theirs)
    found = etree.fromstring(ours).findall(f".//{{{TNS}}}Reading")
    assert [r.findtext(f"{{{TNS}}}DeviceId") for r in found] == [r["DeviceId"] for r in readings]


def test_envelope_batch_equals_the_reference_renderer(desc: ServiceDescription) -> None:
    template = EnvelopeTemplate(desc.operations["RecordVitals"])
    values = {"MRN": "1 & 2", "Readings": {"Reading": [_reading(i, "<&>\r") for i in range(50)]}}

    assert template.render(values) == _reference(template, values)


def test_envelope_batch_refuses_a_control_character_in_any_record(
    desc: ServiceDescription,
) -> None:
    readings = [_reading(i) for i in range(10)]
    readings[7] = {**readings[7], "Value": "7\x00"}
    template = EnvelopeTemplate(desc.operations["RecordVitals"])
    with pytest.raises(EnvelopeValueError):
        template.render({"Readings": {"Reading": readings}})


def test_envelope_empty_complex_elements_close_themselves(desc: ServiceDescription) -> None:
    template = EnvelopeTemplate(desc.operations["RecordVitals"])
    values = {"MRN": "1", "Readings": {"Reading": [{}, {"Bogus": "x"}, _reading(1)]}}

    rendered = template.render(values)
    assert rendered == _reference(template, values)
    assert b"<ns1:Reading/><ns1:Reading/><ns1:Reading>" in rendered


def test_envelope_header_token_is_escaped(desc: ServiceDescription) -> None:
    header = HeaderTemplate(desc.elements["SessionHeader"], "SessionId")
    rendered = EnvelopeTemplate(desc.operations["GetPatient"]).render({"MRN": "1"}, header, "<&>")
    assert b"<ns1:SessionId>&lt;&amp;&gt;</ns1:SessionId>" in rendered


@repeatable(500)
@given(st.text())
def test_escape_text_is_the_translation_table(value: str) -> None:
    try:
        expected: str | None = value.translate(_SPEC)
        if not all(_xml_char(c) for c in value):
            expected = None
    except ValueError:
        expected = None
    try:
        ours: str | None = escape_text(value)
    except EnvelopeValueError:
        ours = None
    assert ours == expected


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
_VALUE = st.one_of(st.none(), _TEXT, st.integers(), st.lists(_TEXT | st.none(), max_size=3))
_READING = st.dictionaries(
    st.sampled_from(["TypeCode", "Value", "Unit", "TakenAt", "DeviceId", "Other"]), _VALUE
)


@repeatable(300, allow=[HealthCheck.function_scoped_fixture])
@given(
    mrn=_VALUE,
    readings=st.one_of(st.none(), _READING, st.lists(_READING | st.none(), max_size=5)),
)
def test_envelope_render_equals_the_reference_renderer(
    desc: ServiceDescription, mrn: Any, readings: Any
) -> None:
    template = EnvelopeTemplate(desc.operations["RecordVitals"])
    values = {"MRN": mrn, "Readings": {"Reading": readings}}
    try:
        expected: Any = _reference(template, values)
    except EnvelopeValueError:
        expected = EnvelopeValueError
    try:
        ours: Any = template.render(values)
    except EnvelopeValueError:
        ours = EnvelopeValueError
    assert ours == expected
