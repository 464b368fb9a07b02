"""load_wsdl: what is not a WSDL is named as such, with the file, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.soap.wsdl import WsdlError, load_wsdl

EHR_WSDL = Path(__file__).resolve().parents[2] / "wsdl" / "hospital" / "ehr.wsdl"
FIX = "save the service's WSDL in its place (often served at its address with ?wsdl)"


def _problem(path: Path) -> str:
    with pytest.raises(WsdlError) as caught:
        load_wsdl(path, "wsdl/ehr.wsdl")
    return str(caught.value)


@pytest.mark.parametrize(
    "content",
    [b"hello world\n", b"", bytes(range(256)) * 4, b'{"wsdl": true}'],
    ids=["text", "empty", "random-bytes", "json"],
)
def test_load_wsdl_not_xml_says_so(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ehr.wsdl"
    path.write_bytes(content)

    assert _problem(path) == (
        f"wsdl/ehr.wsdl:1:1: not a WSDL: the file is not an XML document; {FIX}"
    )


@pytest.mark.parametrize(
    ("content", "root"),
    [
        (
            b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
            b"<body><form><input name=user><br></form></body></html>\n",
            "html",
        ),
        (b'<html xmlns="http://www.w3.org/1999/xhtml"><body/></html>', "html"),
        (b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"/>', "schema"),
    ],
    ids=["html-page", "xhtml-page", "schema"],
)
def test_load_wsdl_other_xml_names_its_root(tmp_path: Path, content: bytes, root: str) -> None:
    path = tmp_path / "ehr.wsdl"
    path.write_bytes(content)

    assert _problem(path) == (
        f"wsdl/ehr.wsdl:1:1: not a WSDL: its root element is <{root}>, not "
        f"<wsdl:definitions>; {FIX}"
    )


def test_load_wsdl_without_a_service_says_so(tmp_path: Path) -> None:
    text = EHR_WSDL.read_text(encoding="utf-8")
    start, end = text.index("<wsdl:service"), text.index("</wsdl:service>")
    path = tmp_path / "ehr.wsdl"
    path.write_text(text[:start] + text[end + len("</wsdl:service>") :], encoding="utf-8")

    assert _problem(path) == (
        "wsdl/ehr.wsdl:1:1: the WSDL has no <service> with a <port>, so it offers no "
        "operations; use the WSDL that describes the service itself, with <wsdl:service> and "
        "<soap:address>"
    )


def test_load_wsdl_importing_a_schema_that_is_not_xml_names_the_schema(tmp_path: Path) -> None:
    text = EHR_WSDL.read_text(encoding="utf-8")
    head = text.index(">", text.index("<xs:schema")) + 1
    path = tmp_path / "ehr.wsdl"
    path.write_text(
        text[:head] + '<xs:include schemaLocation="types.xsd"/>' + text[head:], encoding="utf-8"
    )
    (tmp_path / "types.xsd").write_text("not a schema\n", encoding="utf-8")

    assert _problem(path) == (
        f"wsdl/ehr.wsdl:1:1: cannot read WSDL: {tmp_path.resolve() / 'types.xsd'}, which it "
        "imports, is not an XML document"
    )


def test_load_wsdl_real_wsdl_still_loads() -> None:
    assert "GetPatient" in load_wsdl(EHR_WSDL).operations
