"""parse_envelope on hostile answers, offline: each is a BackendError, nothing expanded or read."""

from __future__ import annotations

import os
import subprocess
import sys
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


def test_an_answer_cut_inside_its_doctype_opens_no_file(tmp_path: Path) -> None:
    # libxml2 reads an internal subset it has not seen the end of only when the
    # parse ends: the refusing resolver must be in place then too. The entity is a
    # FIFO: opening it blocks until a writer comes, with the GIL held, so the
    # parse runs in a process of its own that a blocked open cannot take down
    # with the test run.
    fifo = tmp_path / "entity.fifo"
    os.mkfifo(fifo)
    data = fixture("xxe_parameter_entity.xml", FILE_URL=fifo.as_uri())
    answer = tmp_path / "answer.xml"
    answer.write_bytes(data[: data.index(b"%remote;") + len(b"%remote;")])
    script = (
        "import sys\n"
        "from bridge.errors import BackendError\n"
        "from bridge.soap.xml import parse_envelope\n"
        "try:\n"
        "    parse_envelope(open(sys.argv[1], 'rb').read(), 'GetPatient', None)\n"
        "except BackendError as exc:\n"
        "    print(exc)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, str(answer)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the parser opened the file the answer's DOCTYPE named")
    assert "external DTD or entity" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("url", ["secret.dtd", "http://127.0.0.1:9/evil.dtd"])
def test_external_dtds_are_refused_before_loading(url: str, secret_file: Path) -> None:
    error = _refused(fixture("external_dtd.xml", DTD_URL=url))
    assert "external DTD or entity" in str(error)


def test_deep_nesting_is_refused() -> None:
    _refused(fixture("deeply_nested.xml", OPEN="<tns:x>" * 300, CLOSE="</tns:x>" * 300))


def test_an_answer_over_the_cap_is_refused_without_parsing() -> None:
    error = _refused(b" " * (MAX_XML_BYTES + 1))
    assert "too large" in str(error)
