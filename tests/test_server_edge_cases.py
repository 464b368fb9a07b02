"""Edge cases of `bridge serve`'s HTTP protocol: what a held write must not change.

HttpProtocol holds an answer's head back until the app's next message. On
uvloop, a client's FIN read meanwhile makes the transport close itself
(uvicorn's `eof_received` keeps nothing open), and what is held must have been
sent first, as uvicorn's own protocol would have. The other tests pin
pipelining, the keep-alive timeout, `Expect: 100-continue`, and a large answer
under write flow control. Real servers run on 127.0.0.1 (uvloop, as `bridge
serve`), each stopped by its test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.server import ServerState

from bridge.server import HttpProtocol
from tests.support import self_signed_certificate
from tests.test_server import _Transport

HEAD = b"HEAD /x HTTP/1.1\r\nHost: gateway\r\n\r\n"


async def _head_answer(send: Any) -> None:
    headers = [(b"content-type", b"application/fhir+json"), (b"content-length", b"26")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b""})  # HEAD: nothing is written


class _UvloopTransport(_Transport):
    """Writes as uvloop's TCP transport takes them: once it is closed with nothing
    left to send, it drops every later write."""

    def write(self, data: Any) -> None:
        if not self.closing:
            self.writes.append(bytes(data))


def test_an_answer_is_sent_when_the_peer_half_closes_before_the_turn_ends() -> None:
    async def scenario() -> list[bytes]:
        transport = _UvloopTransport()
        protocols: list[HttpProtocol] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await _head_answer(send)
            # The client's FIN is read before the end of this turn of the loop: uvloop
            # calls eof_received and, as it returns nothing true, closes the transport.
            if not protocols[0].eof_received():
                transport.close()

        config = Config(app=app, http=HttpProtocol, lifespan="off", log_config=None)
        config.load()
        state = ServerState()
        protocol = HttpProtocol(config, state, {}, _loop=asyncio.get_running_loop())
        protocols.append(protocol)
        protocol.connection_made(transport)
        protocol.data_received(HEAD)
        while state.tasks:
            await asyncio.gather(*state.tasks)
        await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport.writes

    raw = b"".join(asyncio.run(scenario()))
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.endswith(b"content-length: 26\r\n\r\n")


# Real servers ------------------------------------------------------------------------


@contextlib.contextmanager
def _server(app: Any, http: type = HttpProtocol, **options: Any) -> Iterator[int]:
    """`app` served by uvicorn with `http` on uvloop on a free loopback port; its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=http,
        lifespan="off",
        log_config=None,
        access_log=False,
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.01)
            assert thread.is_alive(), "the server did not start"
        yield port
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


def _read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_an_answer_reaches_a_client_that_half_closes(tls: bool, tmp_path: Path) -> None:
    """A HEAD answer's head is a write no other follows: held to the end of the turn.
    The app blocks the loop until the client's FIN is in, so the loop reads the FIN
    before that turn ends (uvicorn's own protocol sends the answer here)."""
    answered, fin_sent = threading.Event(), threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await _head_answer(send)
        answered.set()
        fin_sent.wait(10)

    options: dict[str, Any] = {}
    context: ssl.SSLContext | None = None
    if tls:
        cert, key = self_signed_certificate(tmp_path)
        options = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        context = ssl.create_default_context(cafile=str(cert))
    with (
        _server(app, **options) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
    ):
        sock = context.wrap_socket(raw, server_hostname="localhost") if context else raw
        with sock:
            sock.sendall(HEAD)
            assert answered.wait(10)
            # The TCP side only (for TLS: no close_notify), as `nc -N` or a proxy would.
            socket.socket.shutdown(sock, socket.SHUT_WR)
            fin_sent.set()
            answer = _read_to_eof(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"content-length: 26\r\n\r\n")


async def _path_app(scope: Any, receive: Any, send: Any) -> None:
    """Echoes the request's body, or answers its path; /204 answers 204."""
    if scope["path"] == "/204":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    body = body or scope["path"].encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def test_pipelined_requests_are_answered_whole_and_in_order() -> None:
    requests = (
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    with (
        _server(_path_app) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(requests)  # one packet
        raw = _read_to_eof(sock)
    answers = raw.split(b"HTTP/1.1 ")[1:]
    assert [answer[:3] for answer in answers] == [b"200", b"200", b"200", b"204"]
    assert answers[0].endswith(b"content-length: 2\r\n\r\n/a")
    assert answers[1].endswith(b"content-length: 2\r\n\r\n")  # HEAD: no body
    assert answers[2].endswith(b"content-length: 2\r\n\r\n/c")
    assert answers[3].endswith(b"connection: close\r\n\r\n")


@pytest.mark.parametrize("ws", ["auto", "none"])
def test_an_upgrade_request_is_an_ordinary_one_and_the_last_on_its_connection(
    ws: str, caplog: pytest.LogCaptureFixture
) -> None:
    # With uvicorn's default (ws="auto", as `bridge demo` runs) its WebSocket protocol
    # would answer the handshake 403 and log the URL, patient id and all.
    upgrade = (
        b"GET /fhir/Patient/100001?q=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    with (
        caplog.at_level(logging.DEBUG),
        _server(_path_app, ws=ws) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        # uvicorn drops what follows an upgrade request: the connection closes after it.
        sock.sendall(upgrade + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = _read_to_eof(sock)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.endswith(b"connection: close\r\n\r\n/fhir/Patient/100001")
    assert "/fhir/Patient/100001" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_keep_alive_timeout_sends_a_held_answer_before_it_closes() -> None:
    # With no keep-alive at all the timer closes the connection in the very turn
    # the HEAD answer's head is held.
    with (
        _server(_path_app, timeout_keep_alive=0) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = _read_to_eof(sock)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.endswith(b"content-length: 2\r\n\r\n")


def test_a_held_100_continue_reaches_a_client_that_waits_for_it() -> None:
    with (
        _server(_path_app) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        raw = _read_to_eof(sock)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.endswith(b"content-length: 5\r\nconnection: close\r\n\r\nhello")


def _dechunk(raw: bytes) -> bytes:
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    body, at = [], 0
    while True:
        end = rest.index(b"\r\n", at)
        size = int(rest[at:end], 16)
        if size == 0:
            assert rest[end:] == b"\r\n\r\n"
            return b"".join(body)
        body.append(rest[end + 2 : end + 2 + size])
        assert rest[end + 2 + size : end + 4 + size] == b"\r\n"
        at = end + 4 + size


def test_a_large_streamed_answer_under_write_flow_control_arrives_whole() -> None:
    """The client reads nothing until the server's transport has paused writing;
    chunks on both sides of the 64 KiB join limit keep their bytes and order."""
    paused = threading.Event()
    sizes = [65536, 1, 65535, 262144, 10, 100000, 65537]
    sent: list[bytes] = []

    class Protocol(HttpProtocol):
        def pause_writing(self) -> None:
            paused.set()
            super().pause_writing()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        after_pause = 0
        while after_pause < 2 * len(sizes):
            chunk = bytes([len(sent) % 251]) * sizes[len(sent) % len(sizes)]
            sent.append(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            after_pause += paused.is_set()
        await send({"type": "http.response.body", "body": b""})

    with (
        _server(app, http=Protocol) as port,
        socket.create_connection(("127.0.0.1", port), timeout=30) as sock,
    ):
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert paused.wait(30)
        raw = _read_to_eof(sock)
    assert _dechunk(raw) == b"".join(sent)


@pytest.mark.parametrize(
    ("trusted", "client"),
    [
        ([], "127.0.0.1"),  # the default: headers are not believed
        (["10.0.0.0/8"], "127.0.0.1"),  # the peer is not a proxy listed
        (["127.0.0.1"], "203.0.113.9"),
        (["127.0.0.0/8", "10.0.0.7"], "203.0.113.9"),
    ],
)
def test_the_client_address_is_the_peer_unless_it_is_a_trusted_proxy(
    trusted: list[str], client: str
) -> None:
    from bridge.server import client_address_options

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = f"{scope['client'][0]} {scope['scheme']}".encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    request = (
        b"GET /x HTTP/1.1\r\nHost: gateway\r\nX-Forwarded-For: 203.0.113.9\r\n"
        b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
    )
    with (
        _server(app, **client_address_options(trusted)) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(request)
        raw = _read_to_eof(sock)
    scheme = "https" if client != "127.0.0.1" else "http"
    assert raw.endswith(f"\r\n\r\n{client} {scheme}".encode())
