"""parse_envelope on hostile answers, offline: each is a BackendError, nothing expanded or read."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import BackendError
from bridge.soap.xml import MAX_XML_BYTES, parse_envelope
from tests.security.loopback import fixture


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.dtd"
    path.write_text('<!ENTITY leak "SECRET-MARKER">\n')
    return path


def _refused(data: bytes) -> BackendError:
    with pytest.raises(BackendError) as info:
        parse_envelope(data, "GetPatient", None)
    error = info.value
    assert error.status == 502
    text = f"{error} {error.__cause__!r}"
    assert "SECRET-MARKER" not in text
    assert "lollol" not in text
    return error


def test_a_plain_answer_parses() -> None:
    element = parse_envelope(fixture("get_patient_response.xml"), "GetPatient", None)
    assert element.tag == "{urn:hospital:ehr}GetPatientResponse"


def test_billion_laughs_is_refused() -> None:
    _refused(fixture("billion_laughs.xml"))


def test_quadratic_blowup_is_refused() -> None:
    _refused(fixture("quadratic_blowup.xml", BLOB="A" * 60_000, REFS="&a;" * 5_000))


@pytest.mark.parametrize("name", ["xxe_file.xml", "xxe_parameter_entity.xml"])
def test_external_entities_are_refused(name: str, secret_file: Path) -> None:
    _refused(fixture(name, FILE_URL=secret_file.as_uri()))


@pytest.mark.parametrize("url", ["secret.dtd", "http://127.0.0.1:9/evil.dtd"])
def test_external_dtds_are_refused_before_loading(url: str, secret_file: Path) -> None:
    error = _refused(fixture("external_dtd.xml", DTD_URL=url))
    assert "external DTD or entity" in str(error)


def test_deep_nesting_is_refused() -> None:
    _refused(fixture("deeply_nested.xml", OPEN="<tns:x>" * 300, CLOSE="</tns:x>" * 300))


def test_an_answer_over_the_cap_is_refused_without_parsing() -> None:
    error = _refused(b" " * (MAX_XML_BYTES + 1))
    assert "too large" in str(error)
