"""A compromised legacy backend: XML bombs, XXE, external DTDs, huge and deep answers.

A hostile EHR on loopback (`loopback.HostileBackend`) answers the gateway's
login plausibly and then the data call, or the login itself, with a fixture
from `fixtures/`. Each must be a 502 OperationOutcome: never an expansion,
a file read or a network fetch.

File reads are caught with a FIFO: a process that opens it for reading
blocks until a writer comes, and a writer opened without blocking succeeds
only while such a reader exists.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.loopback import Answer, HostileBackend, Recorder, fixture
from tests.support import Gateway, copy_mappings, start_gateway

pytestmark = pytest.mark.e2e

MAX_ANSWER = 16 * 1024 * 1024  # bridge.soap.transport.MAX_RESPONSE_BYTES


@dataclass
class Harness:
    gateway: Gateway
    backend: HostileBackend
    dtd_server: Recorder
    secret: str
    secret_file: Path
    fifo: Path

    def file_url(self, path: Path) -> str:
        return path.as_uri()

    def fifo_was_opened(self) -> bool:
        """True if someone has the FIFO open for reading (and release them)."""
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader
                raise
            return False
        os.close(fd)  # the reader gets end-of-file and goes on
        return True


def _no_breaker(tmp: Path) -> Path:
    """The hospital's mapping with a breaker that never opens: these tests send one
    hostile answer after another, and each must meet the parser, not an open breaker."""
    folder = copy_mappings(tmp, "hospital")
    system = folder / "system.yaml"
    text = system.read_text()
    system.write_text(
        text.replace("  timeout: 10\n", "  timeout: 10\n  breaker_failures: 1000\n", 1)
    )
    assert "breaker_failures: 1000" in system.read_text()
    return folder


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    tmp = tmp_path_factory.mktemp("hostile")
    secret = "SECRET-" + secrets.token_hex(8)
    secret_file = tmp / "secret.dtd"
    # Valid as a file of text and as a DTD fragment, so any reading of it would show.
    secret_file.write_text(f'<!ENTITY leak "{secret}">\n')
    fifo = tmp / "fifo.dtd"
    os.mkfifo(fifo)
    with (
        HostileBackend().running() as backend,
        Recorder().running() as dtd_server,
        start_gateway(tmp, backend.url + "/ehr", mappings=_no_breaker(tmp)) as gateway,
    ):
        assert isinstance(backend, HostileBackend) and isinstance(dtd_server, Recorder)
        yield Harness(gateway, backend, dtd_server, secret, secret_file, fifo)


def _hostile(name: str, h: Harness) -> bytes:
    """The fixture `name`, with its placeholders filled for this harness."""
    if name == "quadratic_blowup.xml":
        # 60 KB of entity referenced 5,000 times: 300 MB if expanded.
        return fixture(name, BLOB="A" * 60_000, REFS="&a;" * 5_000)
    if name == "deeply_nested.xml":
        return fixture(name, OPEN="<tns:x>" * 10_000, CLOSE="</tns:x>" * 10_000)
    if name == "oversized.xml":
        return fixture(name, PADDING="A" * (MAX_ANSWER + 1024))
    raise AssertionError(name)


def _check_502(reply: httpx.Response, h: Harness) -> dict[str, Any]:
    assert reply.status_code == 502, reply.text[:500]
    assert reply.headers["content-type"].startswith("application/fhir+json")
    outcome: dict[str, Any] = reply.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "exception"
    assert len(reply.content) < 2_000  # no expansion made it into the answer
    for leaked in (h.secret, "root:", "lollol", "AAAAAAAAAA"):
        assert leaked not in reply.text
    return outcome


def _get(h: Harness, path: str = "/Patient/100001") -> httpx.Response:
    # A short timeout: a gateway stuck opening the FIFO must not hang the suite.
    return h.gateway.client().get(path, timeout=15)


def _ask(h: Harness, answer: Answer, where: str = "data-call") -> httpx.Response:
    """Answer the data call (or the login) with `answer`, and read a patient.

    For the login, the data call says the session expired: a session already
    logged in logs in again, so the hostile login answer is parsed either way.
    """
    if where == "login":
        expired = Answer(fixture("session_expired_fault.xml"), status=500)
        h.backend.script(expired, Login=answer)
    else:
        h.backend.script(answer)
    try:
        reply = _get(h)
    except httpx.TimeoutException:
        reply = httpx.Response(599, text="timed out")
    assert not h.fifo_was_opened(), "the gateway opened a file a backend's answer named"
    # The hostile answer was really asked for.
    assert h.backend.operations()[-1] == ("Login" if where == "login" else "GetPatient")
    return reply


def test_the_hostile_backend_serves_a_plausible_patient(harness: Harness, fhir: Any) -> None:
    # The harness itself works: a plain answer is a Patient, so the 502s below mean something.
    harness.backend.script(Answer(fixture("get_patient_response.xml")))
    reply = _get(harness)
    assert reply.status_code == 200, reply.text
    assert fhir(reply.json())["name"][0]["family"] == "MÜLLER"
    assert harness.backend.operations()[-1] == "GetPatient"


WHERE = ["data-call", "login"]


@pytest.mark.parametrize("where", WHERE)
def test_billion_laughs_is_502(harness: Harness, where: str) -> None:
    reply = _ask(harness, Answer(fixture("billion_laughs.xml")), where)
    _check_502(reply, harness)


@pytest.mark.parametrize("where", WHERE)
def test_quadratic_blowup_is_502(harness: Harness, where: str) -> None:
    reply = _ask(harness, Answer(_hostile("quadratic_blowup.xml", harness)), where)
    _check_502(reply, harness)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("target", ["/etc/passwd", "secret", "fifo"])
@pytest.mark.parametrize("name", ["xxe_file.xml", "xxe_parameter_entity.xml"])
def test_xxe_reads_no_file(harness: Harness, name: str, target: str, where: str) -> None:
    path = {"secret": harness.secret_file, "fifo": harness.fifo}.get(target, Path(target))
    reply = _ask(harness, Answer(fixture(name, FILE_URL=path.as_uri())), where)
    _check_502(reply, harness)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("name", ["external_dtd.xml", "xxe_parameter_entity.xml", "xxe_file.xml"])
@pytest.mark.parametrize("scheme", ["http", "file"])
def test_external_dtds_are_never_fetched(
    harness: Harness, name: str, where: str, scheme: str
) -> None:
    if scheme == "http":
        url = harness.dtd_server.url + "/evil.dtd"
    else:
        url = harness.fifo.as_uri()
    harness.dtd_server.seen.clear()
    placeholder = "DTD_URL" if name == "external_dtd.xml" else "FILE_URL"
    body = fixture(name, **{placeholder: url})
    reply = _ask(harness, Answer(body), where)
    _check_502(reply, harness)
    assert harness.dtd_server.seen == [], "the gateway fetched a DTD a backend's answer named"


def test_an_external_dtd_in_utf16_is_refused_too(harness: Harness) -> None:
    text = fixture("external_dtd.xml", DTD_URL=harness.fifo.as_uri()).decode()
    body = text.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    reply = _ask(harness, Answer(body, content_type="text/xml; charset=utf-16"))
    _check_502(reply, harness)


def test_xinclude_is_never_processed(harness: Harness, fhir: Any) -> None:
    body = fixture("xinclude.xml", FILE_URL=harness.secret_file.as_uri())
    reply = _ask(harness, Answer(body))
    # The element is data nobody expands: whatever the answer, the file stays unread.
    assert reply.status_code in (200, 502), reply.text
    assert harness.secret not in reply.text
    fhir(reply.json())


@pytest.mark.parametrize("where", WHERE)
def test_deeply_nested_answer_is_502(harness: Harness, where: str) -> None:
    reply = _ask(harness, Answer(_hostile("deeply_nested.xml", harness)), where)
    _check_502(reply, harness)


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
def test_oversized_answer_is_502(harness: Harness, length: bool) -> None:
    reply = _ask(harness, Answer(_hostile("oversized.xml", harness), length=length))
    _check_502(reply, harness)


def test_a_hostile_search_answer_is_502(harness: Harness) -> None:
    harness.backend.script(Answer(fixture("billion_laughs.xml")))
    reply = _get(harness, "/Patient?family=smith")
    _check_502(reply, harness)


def test_the_gateway_still_serves_after_the_attacks(harness: Harness, fhir: Any) -> None:
    harness.backend.script(Answer(fixture("get_patient_response.xml")))
    reply = _get(harness)
    assert reply.status_code == 200, reply.text
    fhir(reply.json())
    logs = harness.gateway.logs()
    assert harness.secret not in logs
    assert "root:" not in logs
    assert "Traceback" not in logs
