"""parse_envelope: untrusted legacy XML parsed safely, SOAP faults found in it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lxml import etree

from bridge.errors import BackendError
from bridge.soap.xml import SoapFault, compile_local_path, parse_envelope

FIXTURES = Path(__file__).parent / "fixtures"
TNS = "urn:hospital:ehr"
VENDOR_CODE = compile_local_path("detail/VendorError/Code")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def everything_about(exc: BaseException) -> str:
    """Every string an error (and its causes) could show to a log or a client."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen), repr(seen.args), repr(vars(seen))]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def test_parse_envelope_returns_the_first_body_element() -> None:
    element = parse_envelope(fixture("get_patient_response.xml"), "GetPatient", VENDOR_CODE)

    assert element.tag == f"{{{TNS}}}GetPatientResponse"
    assert element.findtext(f"{{{TNS}}}Patient/{{{TNS}}}MRN") == "100001"
    assert element.findtext(f"{{{TNS}}}Patient/{{{TNS}}}Name") == "MÜLLER^ŁUKASZ"


def test_parse_envelope_soap12_response() -> None:
    element = parse_envelope(fixture("response_soap12.xml"), "GetPatient", None)

    assert element.tag == "{urn:hospital:ehr12}GetPatientResponse"


def test_parse_envelope_soap11_fault_with_vendor_code() -> None:
    with pytest.raises(SoapFault) as info:
        parse_envelope(fixture("fault_pat_404.xml"), "GetPatient", VENDOR_CODE)

    fault = info.value
    assert fault.operation == "GetPatient"
    assert fault.vendor_code == "EHR-PAT-404"
    assert fault.fault_code == "soap11env:Client"


def test_parse_envelope_fault_hides_the_fault_text() -> None:
    with pytest.raises(SoapFault) as info:
        parse_envelope(fixture("fault_pat_404.xml"), "GetPatient", VENDOR_CODE)

    shown = str(info.value) + repr(info.value) + repr(info.value.args)
    assert "100042" not in shown
    assert "not found" not in shown
    assert "Patient 100042 not found" not in shown


def test_parse_envelope_fault_without_code_path_has_no_vendor_code() -> None:
    with pytest.raises(SoapFault) as info:
        parse_envelope(fixture("fault_pat_404.xml"), "GetPatient", None)

    assert info.value.vendor_code is None
    assert info.value.fault_code == "soap11env:Client"


def test_parse_envelope_fault_code_path_that_finds_nothing() -> None:
    with pytest.raises(SoapFault) as info:
        parse_envelope(fixture("fault_pat_404.xml"), "GetPatient", compile_local_path("detail/X"))

    assert info.value.vendor_code is None


def test_parse_envelope_fault_code_path_with_wildcard() -> None:
    with pytest.raises(SoapFault) as info:
        parse_envelope(
            fixture("fault_pat_404.xml"), "GetPatient", compile_local_path("detail/*/Code")
        )

    assert info.value.vendor_code == "EHR-PAT-404"


def test_parse_envelope_soap12_fault() -> None:
    with pytest.raises(SoapFault) as info:
        parse_envelope(
            fixture("fault_soap12.xml"), "GetPatient", compile_local_path("Detail/VendorError/Code")
        )

    fault = info.value
    assert fault.fault_code == "env:Sender"
    assert fault.vendor_code == "EHR-PAT-404"
    assert "100042" not in str(fault) + repr(fault)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"not xml at all",
        b"<html><body>Service Unavailable",
        b"<?xml version='1.0'?>",
        b"\xff\xfe<\x00a\x00",
        b"<a><b></a>",
        b'{"error": "json"}',
    ],
)
def test_parse_envelope_not_xml_is_backend_error(data: bytes) -> None:
    with pytest.raises(BackendError) as info:
        parse_envelope(data, "GetPatient", VENDOR_CODE)

    assert info.value.status == 502
    assert info.value.diagnostics == (
        "The legacy system answered with XML the gateway could not parse."
    )


@pytest.mark.parametrize("name", ["not_soap.xml", "wrong_envelope_ns.xml"])
def test_parse_envelope_non_soap_root_is_backend_error(name: str) -> None:
    with pytest.raises(BackendError) as info:
        parse_envelope(fixture(name), "GetPatient", VENDOR_CODE)

    assert info.value.diagnostics == "The legacy system did not answer with a SOAP envelope."


def test_parse_envelope_html_page_is_backend_error() -> None:
    with pytest.raises(BackendError):
        parse_envelope(b"<html><body><h1>Bad gateway</h1></body></html>", "GetPatient", None)


@pytest.mark.parametrize("name", ["empty_body.xml", "no_body.xml"])
def test_parse_envelope_empty_body_is_backend_error(name: str) -> None:
    with pytest.raises(BackendError) as info:
        parse_envelope(fixture(name), "GetPatient", VENDOR_CODE)

    assert info.value.diagnostics == "The legacy system answered with an empty SOAP body."


def test_parse_envelope_xxe_is_refused_without_reading_the_file() -> None:
    started = time.perf_counter()
    with pytest.raises(BackendError) as info:
        parse_envelope(fixture("xxe.xml"), "GetPatient", VENDOR_CODE)

    assert time.perf_counter() - started < 1
    assert "root:" not in everything_about(info.value)
    assert "passwd" not in info.value.diagnostics


def test_parse_envelope_billion_laughs_is_refused_fast() -> None:
    started = time.perf_counter()
    with pytest.raises(BackendError) as info:
        parse_envelope(fixture("billion_laughs.xml"), "GetPatient", VENDOR_CODE)

    assert time.perf_counter() - started < 1
    assert "lollollol" not in everything_about(info.value)


def test_parse_envelope_internal_entity_is_refused() -> None:
    data = (
        b'<!DOCTYPE e [<!ENTITY name "Smith">]>'
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<s:Body><r>&name;</r></s:Body></s:Envelope>"
    )

    with pytest.raises(BackendError):
        parse_envelope(data, "GetPatient", None)


def test_parse_envelope_external_dtd_is_refused() -> None:
    data = (
        b'<!DOCTYPE e SYSTEM "http://127.0.0.1:9/evil.dtd">'
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<s:Body><r/></s:Body></s:Envelope>"
    )

    with pytest.raises(BackendError):
        parse_envelope(data, "GetPatient", None)


def test_parse_envelope_skips_a_comment_before_the_response() -> None:
    element = parse_envelope(fixture("comment_before_response.xml"), "Logout", VENDOR_CODE)

    assert isinstance(element.tag, str)
    assert element.tag == f"{{{TNS}}}LogoutResponse"


def test_parse_envelope_finds_a_fault_after_a_comment() -> None:
    with pytest.raises(SoapFault) as info:
        parse_envelope(fixture("comment_before_fault.xml"), "GetPatient", VENDOR_CODE)

    assert info.value.vendor_code == "EHR-PAT-404"


def test_parse_envelope_body_with_only_a_comment_is_empty() -> None:
    data = (
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<s:Body><!-- nothing --></s:Body></s:Envelope>"
    )

    with pytest.raises(BackendError):
        parse_envelope(data, "GetPatient", None)


def test_compile_local_path_matches_any_prefix() -> None:
    fault = etree.fromstring(
        b'<f><detail><x:VendorError xmlns:x="urn:a"><x:Code> C-1 </x:Code></x:VendorError>'
        b"</detail></f>"
    )

    assert VENDOR_CODE.find(fault) == "C-1"


@pytest.mark.parametrize(
    ("path", "step"),
    [
        ("detail/Vendor'Error/Code", '"Vendor\'Error"'),
        ('detail/Vendor"Error/Code', "'Vendor\"Error'"),
        ("detail/v:VendorError/Code", "'v:VendorError'"),
        ("detail//Code", "''"),
        ("detail/Code[1]", "'Code[1]'"),
    ],
    ids=["apostrophe", "quote", "prefix", "empty-step", "predicate"],
)
def test_compile_local_path_refuses_what_is_no_element_name(path: str, step: str) -> None:
    with pytest.raises(ValueError, match="is not an XML element name") as caught:
        compile_local_path(path)

    assert str(caught.value) == (
        f"{step} is not an XML element name; give local names without a prefix, "
        "separated by '/', or '*' for any element"
    )


def test_compile_local_path_accepts_any_xml_name() -> None:
    fault = etree.fromstring(
        "<f><détail><Vendor-Error.v2><_Code>C-2</_Code></Vendor-Error.v2></détail></f>"
    )

    assert compile_local_path("/détail/Vendor-Error.v2/_Code/").find(fault) == "C-2"
