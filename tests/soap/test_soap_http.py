"""The default transport (bridge/soap/http.py) against raw HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import Awaitable, Callable

import pytest

from bridge import busypoll
from bridge.errors import BackendError
from bridge.soap.http import HttpTransport
from bridge.soap.transport import ConnectionLost, ReadTimeout, SoapRequest, SoapResponse, Unsent

XML = b"<Envelope/>"
Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


def _ok(body: bytes = XML, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
        + extra
        + (b"Content-Length: %d\r\n\r\n" % len(body) + body)
    )


class _Server:
    """A raw HTTP/1.1 server's connection handler: every request read whole and
    handed to `answer`, which writes the reply; counts the connections."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                await self.answer(head + body, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _exchange(answer: Answer, calls: int = 1, **options: float) -> list[object]:
    """Start a server answering with `answer`, make `calls` calls; results or errors."""
    handler = _Server(answer)
    server = await asyncio.start_server(handler.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = HttpTransport(
        connect_timeout=2.0,
        max_connections=2,
        max_response_bytes=int(options.get("limit", 16 * 1024 * 1024)),
    )
    results: list[object] = []
    try:
        for _ in range(calls):
            request = SoapRequest(
                f"http://127.0.0.1:{port}/ehr",
                b"<call/>",
                {"Content-Type": "text/xml", "SOAPAction": '"Op"'},
                "Op",
                float(options.get("timeout", 2.0)),
            )
            try:
                results.append(await transport.send(request))
            except Exception as exc:
                results.append(exc)
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()
    results.append(handler.connections)
    return results


def run(coro: Awaitable[list[object]]) -> list[object]:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_http_keeps_the_connection_alive() -> None:
    seen: list[bytes] = []

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        seen.append(request)
        writer.write(_ok())

    *responses, connections = run(_exchange(answer, calls=3))
    assert connections == 1
    assert all(isinstance(r, SoapResponse) and r.body == XML for r in responses)
    first = seen[0]
    assert first.startswith(b"POST /ehr HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b'SOAPAction: "Op"\r\n' in first and first.endswith(b"\r\n\r\n<call/>")


def test_http_reads_chunked_and_until_close_answers() -> None:
    async def chunked(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\n<Enve\r\n6\r\nlope/>\r\n0\r\n\r\n"
        )

    async def until_close(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + XML)
        writer.close()

    for answer in (chunked, until_close):
        response, _ = run(_exchange(answer))
        assert isinstance(response, SoapResponse) and response.body == XML


def test_http_reads_cookies_and_gzip() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        body = gzip.compress(XML)
        writer.write(
            _ok(body, b'Content-Encoding: gzip\r\nSet-Cookie: SID="abc"; Path=/; HttpOnly\r\n')
        )

    response, _ = run(_exchange(answer))
    assert isinstance(response, SoapResponse)
    assert response.body == XML and response.cookies == {"SID": "abc"}


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
def test_http_refuses_an_answer_past_the_cap(length: bool) -> None:
    big = b"<x>" + b"A" * 4096 + b"</x>"

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        if length:
            writer.write(_ok(big))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + big)
            writer.close()

    error, _ = run(_exchange(answer, limit=1024))
    assert isinstance(error, BackendError) and "too large" in str(error.diagnostics)


def test_http_says_how_a_call_failed() -> None:
    async def silent(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def hang_up(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n<Env")
        writer.close()

    async def garbage(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SOAP/9 what\r\n\r\n")

    error, _ = run(_exchange(silent, timeout=0.2))
    assert isinstance(error, ReadTimeout)
    error, _ = run(_exchange(hang_up))
    assert isinstance(error, ConnectionLost)
    error, _ = run(_exchange(garbage))
    assert isinstance(error, ConnectionLost)


def test_http_nothing_sent_when_the_connection_is_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there

    async def call() -> object:
        transport = HttpTransport(connect_timeout=1.0, max_connections=1)
        try:
            return await transport.send(
                SoapRequest(f"http://127.0.0.1:{port}/ehr", b"<call/>", {}, "Op", 1.0)
            )
        except Exception as exc:
            return exc
        finally:
            await transport.close()

    assert isinstance(asyncio.run(call()), Unsent)


async def _calls_on_one_connection(delays: list[float], timeouts: list[float]) -> list[object]:
    """Call i is answered after delays[i] seconds and may wait timeouts[i]: the results,
    the connections opened, and the seconds each call took by the loop's clock."""
    answered = 0

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await asyncio.sleep(delays[answered])
        answered += 1
        writer.write(_ok())

    handler = _Server(answer)
    server = await asyncio.start_server(handler.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = HttpTransport(connect_timeout=2.0, max_connections=1)
    loop = asyncio.get_running_loop()
    results: list[object] = []
    took: list[float] = []
    try:
        for timeout in timeouts:
            request = SoapRequest(
                f"http://127.0.0.1:{port}/ehr", b"<call/>", {"SOAPAction": '"Op"'}, "Op", timeout
            )
            started = loop.time()
            try:
                results.append(await transport.send(request))
            except Exception as exc:
                results.append(exc)
            took.append(loop.time() - started)
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()
    return [results, handler.connections, took]


def test_http_a_later_call_with_a_shorter_deadline_times_out_at_its_own() -> None:
    # The first call's timer (10 s) is still armed when the second (0.3 s) begins.
    results, connections, took = run(_calls_on_one_connection([0, 5], [10.0, 0.3]))
    assert isinstance(results[0], SoapResponse)  # type: ignore[index]
    assert isinstance(results[1], ReadTimeout)  # type: ignore[index]
    assert connections == 1
    assert took[1] < 3  # type: ignore[index]  # its own deadline, not the first call's 10 s


def test_http_a_later_call_with_a_longer_deadline_outlives_the_first_ones_timer() -> None:
    # The first call's timer (0.2 s) fires while the second (answered after 0.5 s,
    # allowed 5 s) is under way: the second goes on, and so do the calls after it.
    results, connections, _ = run(_calls_on_one_connection([0, 0.5, 0, 0], [0.2, 5.0, 0.2, 5.0]))
    assert all(isinstance(r, SoapResponse) for r in results)  # type: ignore[union-attr]
    assert connections == 1


def test_http_a_call_sent_starts_polling_for_its_answer() -> None:
    # The legacy system's answer may come within the window (bridge/busypoll.py).
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_ok())

    busypoll.configure(0.0005)
    try:
        *responses, _ = run(_exchange(answer, calls=2))
        poll = busypoll.current()
        assert poll is not None and poll.stretches >= 1
    finally:
        busypoll.configure(0)
    assert all(isinstance(r, SoapResponse) and r.body == XML for r in responses)
