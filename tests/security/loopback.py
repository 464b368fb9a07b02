"""Small HTTP servers on loopback for the security tests, started and stopped by a test.

- `HostileBackend` plays a compromised legacy EHR: it answers the login and
  logout plausibly and any other call (or the login too) with a fixture from
  `fixtures/`, so the hostile answer reaches the gateway's XML parser.
- `Recorder` records every request it gets and answers 404: the place an
  external DTD points to, to prove the gateway never fetched it.
- `RecordingProxy` stands between the gateway and the real mock hospital and
  keeps every SOAP envelope the gateway sent, to check how values were escaped.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from lxml import etree

FIXTURES = Path(__file__).parent / "fixtures"

# Parses what the gateway sends: strict, and nothing external.
_STRICT = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def operation_of(envelope: bytes) -> str:
    """The local name of the first element in the SOAP Body (the operation called)."""
    root = etree.fromstring(envelope, parser=_STRICT)
    body = next(e for e in root if isinstance(e.tag, str) and etree.QName(e).localname == "Body")
    first = next(e for e in body if isinstance(e.tag, str))
    return etree.QName(first).localname


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a peer that hung up (the gateway refusing an oversized answer)


@dataclass
class Answer:
    body: bytes
    status: int = 200
    # False: no Content-Length, the body ends when the connection closes.
    length: bool = True
    content_type: str = "text/xml; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[str, str, dict[str, str], bytes], Answer]


@dataclass
class Seen:
    method: str
    path: str
    body: bytes


@dataclass
class _Server:
    handler: Handler
    seen: list[Seen] = field(default_factory=list)
    httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        self.seen.append(Seen(request.command, request.path, body))
        headers = {k.lower(): v for k, v in request.headers.items()}
        answer = self.handler(request.command, request.path, headers, body)
        request.send_response(answer.status)
        request.send_header("Content-Type", answer.content_type)
        for name, value in answer.headers:
            request.send_header(name, value)
        if answer.length:
            request.send_header("Content-Length", str(len(answer.body)))
        else:
            request.close_connection = True
            request.send_header("Connection", "close")
        request.end_headers()
        # The gateway may stop reading (an oversized answer): as it should.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            request.wfile.write(answer.body)

    @contextmanager
    def running(self) -> Iterator[_Server]:
        outer = self

        class _RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer._handle(self)

            do_POST = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = _Quiet(("127.0.0.1", 0), _RequestHandler)
        self.httpd.daemon_threads = True
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()
            thread.join(timeout=5)


class Recorder(_Server):
    """Records every request; answers 404."""

    def __init__(self) -> None:
        super().__init__(lambda *_: Answer(b"", status=404, content_type="text/plain"))


def fixture(name: str, **values: str) -> bytes:
    """A fixture file with its `{{NAME}}` placeholders filled in."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    assert "{{" not in text, f"unfilled placeholder in {name}"
    return text.encode("utf-8")


class HostileBackend(_Server):
    """A compromised EHR (the hospital system's SOAP 1.1 operations).

    `answers` maps an operation to what it answers; Login and Logout answer
    plausibly unless overridden, every other operation answers `default`.
    """

    def __init__(self) -> None:
        super().__init__(self._answer)
        self.answers: dict[str, Answer] = {}
        self.default = Answer(fixture("get_patient_response.xml"))
        self.lock = threading.Lock()

    def script(self, default: Answer, **answers: Answer) -> None:
        with self.lock:
            self.default = default
            self.answers = answers
            self.seen.clear()

    def operations(self) -> list[str]:
        return [operation_of(s.body) for s in self.seen if s.method == "POST"]

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        operation = operation_of(body)
        with self.lock:
            if operation in self.answers:
                return self.answers[operation]
            if operation == "Login":
                return Answer(fixture("login_response.xml"))
            if operation == "Logout":
                return Answer(fixture("logout_response.xml"))
            return self.default


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class RecordingProxy(_Server):
    """Forwards every request to `upstream` (the mock hospital) and keeps what it carried."""

    def __init__(self, upstream: str) -> None:
        super().__init__(self._forward)
        self.upstream = urlsplit(upstream)

    def envelopes(self) -> list[bytes]:
        return [s.body for s in self.seen if s.method == "POST"]

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        conn = http.client.HTTPConnection(
            self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=30
        )
        try:
            sent = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP}
            conn.request(method, path, body=body, headers=sent)
            reply = conn.getresponse()
            data = reply.read()
            cookies = [("Set-Cookie", c) for c in reply.headers.get_all("Set-Cookie") or []]
            content_type = reply.getheader("Content-Type", "")
            return Answer(data, reply.status, content_type=content_type, headers=cookies)
        finally:
            conn.close()
