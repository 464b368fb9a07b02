"""EnvelopeTemplate: the envelopes it renders equal what zeep builds for the same call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import zeep
from lxml import etree

from bridge.soap.envelope import EnvelopeTemplate, EnvelopeValueError, HeaderTemplate, escape_text
from bridge.soap.wsdl import SOAP11_ENV, SOAP12_ENV, ServiceDescription, load_wsdl

EHR_WSDL = Path("wsdl/hospital/ehr.wsdl")
EHR12_WSDL = Path(__file__).parent / "fixtures" / "ehr12.wsdl"
TNS = "urn:hospital:ehr"

TRICKY = [
    "O'Brien",
    'say "hi"',
    "<Patient>",
    "a > b",
    "Smith & Sons",
    "&amp; already escaped",
    "]]>",
    "<![CDATA[x]]>",
    "<!-- not a comment -->",
    "Müller",
    "Łukasiewicz",
    "Ærøskøbing",
    "山田太郎",
    "🏥👩‍⚕️",
    "tab\there",
    "line\nbreak",
    "  padded  ",
    "",
]


@pytest.fixture(scope="module")
def desc() -> ServiceDescription:
    return load_wsdl(EHR_WSDL)


@pytest.fixture(scope="module")
def client() -> zeep.Client:
    return zeep_client(EHR_WSDL)


@pytest.fixture(scope="module")
def session_header(desc: ServiceDescription) -> HeaderTemplate:
    return HeaderTemplate(desc.elements["SessionHeader"], "SessionId")


def zeep_client(wsdl: Path) -> zeep.Client:
    return zeep.Client(wsdl=str(wsdl))  # type: ignore[no-untyped-call]


def canonical(xml: bytes | etree._Element) -> str:
    """C14N 2.0 with prefixes rewritten: equal for the same names, order and text."""
    root = etree.fromstring(xml) if isinstance(xml, bytes) else xml
    return str(etree.canonicalize(root, rewrite_prefixes=True))


def structure(el: etree._Element) -> tuple[Any, ...]:
    """(qualified name, text, children, tail): the shape that matters, prefixes aside."""
    return (
        el.tag,
        el.text or "",
        tuple(structure(c) for c in el),
        el.tail or "",
    )


def zeep_envelope(client: zeep.Client, operation: str, **kwargs: Any) -> etree._Element:
    message: etree._Element = client.create_message(  # type: ignore[no-untyped-call]
        client.service, operation, **kwargs
    )
    return message


def assert_same_envelope(ours: bytes, theirs: etree._Element) -> None:
    assert canonical(ours) == canonical(theirs)
    assert structure(etree.fromstring(ours)) == structure(theirs)


# -- against zeep --------------------------------------------------------------------


def test_envelope_login_equals_zeep(desc: ServiceDescription, client: zeep.Client) -> None:
    ours = EnvelopeTemplate(desc.operations["Login"]).render(
        {"Username": "bridge", "Password": "s3cret"}
    )

    assert_same_envelope(ours, zeep_envelope(client, "Login", Username="bridge", Password="s3cret"))


def test_envelope_get_patient_equals_zeep(desc: ServiceDescription, client: zeep.Client) -> None:
    ours = EnvelopeTemplate(desc.operations["GetPatient"]).render({"MRN": "100001"})

    assert_same_envelope(ours, zeep_envelope(client, "GetPatient", MRN="100001"))


def test_envelope_get_patient_with_session_header_equals_zeep(
    desc: ServiceDescription, client: zeep.Client, session_header: HeaderTemplate
) -> None:
    ours = EnvelopeTemplate(desc.operations["GetPatient"]).render(
        {"MRN": "100001"}, session_header, "TOKEN"
    )

    theirs = zeep_envelope(
        client, "GetPatient", MRN="100001", _soapheaders={"SessionHeader": {"SessionId": "TOKEN"}}
    )
    assert_same_envelope(ours, theirs)


def test_envelope_header_as_element_equals_zeep(
    desc: ServiceDescription, client: zeep.Client, session_header: HeaderTemplate
) -> None:
    element = client.get_element(f"{{{TNS}}}SessionHeader")  # type: ignore[no-untyped-call]
    header = element(SessionId="TOKEN")
    ours = EnvelopeTemplate(desc.operations["GetPatient"]).render(
        {"MRN": "100001"}, session_header, "TOKEN"
    )

    assert_same_envelope(
        ours, zeep_envelope(client, "GetPatient", MRN="100001", _soapheaders=[header])
    )


@pytest.mark.parametrize(
    "criteria",
    [
        {"LastName": "Smith"},
        {"LastName": "Smith", "DOB": "01/02/1980"},
        {"FirstName": "Ann", "Sex": "F"},
        {"MRN": "100001"},
        {"LastName": "Smith", "FirstName": "Ann", "DOB": "01/02/1980", "Sex": "F", "MRN": "1"},
        {},
    ],
)
def test_envelope_find_patients_with_omitted_criteria_equals_zeep(
    desc: ServiceDescription,
    client: zeep.Client,
    session_header: HeaderTemplate,
    criteria: dict[str, str],
) -> None:
    ours = EnvelopeTemplate(desc.operations["FindPatients"]).render(
        criteria, session_header, "TOKEN"
    )

    theirs = zeep_envelope(
        client, "FindPatients", _soapheaders={"SessionHeader": {"SessionId": "TOKEN"}}, **criteria
    )
    assert_same_envelope(ours, theirs)


def test_envelope_find_patients_keeps_schema_order_not_call_order(
    desc: ServiceDescription, client: zeep.Client
) -> None:
    ours = EnvelopeTemplate(desc.operations["FindPatients"]).render(
        {"MRN": "1", "Sex": "F", "LastName": "Smith"}
    )

    body = etree.fromstring(ours).find(f"{{{SOAP11_ENV}}}Body/{{{TNS}}}FindPatients")
    assert body is not None
    assert [etree.QName(c).localname for c in body] == ["LastName", "Sex", "MRN"]
    assert_same_envelope(
        ours, zeep_envelope(client, "FindPatients", MRN="1", Sex="F", LastName="Smith")
    )


def test_envelope_fetch_next_equals_zeep(
    desc: ServiceDescription, client: zeep.Client, session_header: HeaderTemplate
) -> None:
    ours = EnvelopeTemplate(desc.operations["FetchNext"]).render(
        {"CursorId": "CUR-1"}, session_header, "TOKEN"
    )

    theirs = zeep_envelope(
        client,
        "FetchNext",
        CursorId="CUR-1",
        _soapheaders={"SessionHeader": {"SessionId": "TOKEN"}},
    )
    assert_same_envelope(ours, theirs)


def test_envelope_logout_equals_zeep(desc: ServiceDescription, client: zeep.Client) -> None:
    ours = EnvelopeTemplate(desc.operations["Logout"]).render({"SessionId": "TOKEN"})

    assert_same_envelope(ours, zeep_envelope(client, "Logout", SessionId="TOKEN"))


def test_envelope_without_token_has_no_header(
    desc: ServiceDescription, session_header: HeaderTemplate
) -> None:
    ours = EnvelopeTemplate(desc.operations["GetPatient"]).render(
        {"MRN": "1"}, session_header, None
    )

    assert etree.fromstring(ours).find(f"{{{SOAP11_ENV}}}Header") is None


@pytest.mark.parametrize("value", TRICKY)
def test_envelope_tricky_values_equal_zeep(
    desc: ServiceDescription, client: zeep.Client, session_header: HeaderTemplate, value: str
) -> None:
    ours = EnvelopeTemplate(desc.operations["FindPatients"]).render(
        {"LastName": value, "FirstName": value}, session_header, value
    )

    theirs = zeep_envelope(
        client,
        "FindPatients",
        LastName=value,
        FirstName=value,
        _soapheaders={"SessionHeader": {"SessionId": value}},
    )
    assert_same_envelope(ours, theirs)


@pytest.mark.parametrize("value", ["a\r\nb", "\r", "line one\rline two"])
def test_envelope_carriage_return_survives_like_zeep(
    desc: ServiceDescription, client: zeep.Client, value: str
) -> None:
    # An XML parser turns a literal CR into LF; only a character reference keeps it.
    ours = EnvelopeTemplate(desc.operations["GetPatient"]).render({"MRN": value})

    assert etree.fromstring(ours).findtext(f".//{{{TNS}}}MRN") == value
    assert_same_envelope(ours, zeep_envelope(client, "GetPatient", MRN=value))


# -- escaping on its own -----------------------------------------------------------------


@pytest.mark.parametrize("value", TRICKY)
def test_envelope_values_round_trip_through_lxml(
    desc: ServiceDescription, session_header: HeaderTemplate, value: str
) -> None:
    ours = EnvelopeTemplate(desc.operations["FindPatients"]).render(
        {"LastName": value}, session_header, value
    )

    root = etree.fromstring(ours)
    assert (root.findtext(f".//{{{TNS}}}LastName") or "") == value
    assert (root.findtext(f".//{{{TNS}}}SessionId") or "") == value


def test_envelope_is_utf8_bytes(desc: ServiceDescription) -> None:
    ours = EnvelopeTemplate(desc.operations["GetPatient"]).render({"MRN": "Müller 🏥"})

    assert ours.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    assert "Müller 🏥".encode() in ours


def test_escape_text_escapes_markup() -> None:
    assert escape_text("<a href='x'>&\"</a>") == "&lt;a href='x'&gt;&amp;\"&lt;/a&gt;"


@pytest.mark.parametrize(
    "value",
    [
        "\x00",
        "a\x00b",
        "\x1b[31m",
        "\x01",
        "\x08",
        "\x0b",
        "\x0c",
        "\x1f",
        "\ufffe",
        "\uffff",
        "\ud800",
    ],
)
def test_envelope_value_xml_cannot_carry_is_refused(
    desc: ServiceDescription, session_header: HeaderTemplate, value: str
) -> None:
    template = EnvelopeTemplate(desc.operations["FindPatients"])

    with pytest.raises(EnvelopeValueError):
        template.render({"LastName": value})
    with pytest.raises(EnvelopeValueError):
        template.render({"LastName": "Smith"}, session_header, value)


def test_envelope_value_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="XML cannot carry"):
        escape_text("\x00")


def test_envelope_value_error_message_does_not_echo_the_value() -> None:
    with pytest.raises(EnvelopeValueError) as info:
        escape_text("Zbigniewska\x00")

    assert "Zbigniewska" not in str(info.value)


# -- HTTP headers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "operation", ["Login", "Logout", "GetPatient", "FindPatients", "FetchNext"]
)
def test_envelope_soap11_http_headers(desc: ServiceDescription, operation: str) -> None:
    template = EnvelopeTemplate(desc.operations[operation])

    assert template.content_type == "text/xml; charset=utf-8"
    assert template.http_headers == {
        "Content-Type": "text/xml; charset=utf-8",
        "SOAPAction": f'"{operation}"',
    }


def test_envelope_soap11_http_headers_equal_zeep(
    desc: ServiceDescription, client: zeep.Client
) -> None:
    _, theirs = client.service._binding._create("GetPatient", (), {"MRN": "1"}, client=client)

    assert EnvelopeTemplate(desc.operations["GetPatient"]).http_headers == dict(theirs)


def test_envelope_soap11_uses_the_soap11_namespace(desc: ServiceDescription) -> None:
    ours = EnvelopeTemplate(desc.operations["GetPatient"]).render({"MRN": "1"})

    assert etree.fromstring(ours).tag == f"{{{SOAP11_ENV}}}Envelope"


def test_envelope_soap12_equals_zeep() -> None:
    desc12 = load_wsdl(EHR12_WSDL)
    client12 = zeep_client(EHR12_WSDL)
    op = desc12.operations["GetPatient"]
    header = HeaderTemplate(desc12.elements["SessionHeader"], "SessionId")

    ours = EnvelopeTemplate(op).render({"MRN": "Müller & <1>"}, header, "TOKEN")
    theirs, theirs_headers = client12.service._binding._create(
        "GetPatient",
        (),
        {"MRN": "Müller & <1>", "_soapheaders": {"SessionHeader": {"SessionId": "TOKEN"}}},
        client=client12,
    )

    assert op.soap_version == "1.2"
    assert etree.fromstring(ours).tag == f"{{{SOAP12_ENV}}}Envelope"
    assert_same_envelope(ours, theirs)
    template = EnvelopeTemplate(op)
    assert template.content_type == (
        'application/soap+xml; charset=utf-8; action="urn:hospital:ehr12/GetPatient"'
    )
    assert template.content_type == theirs_headers["Content-Type"]
    assert "SOAPAction" not in template.http_headers
