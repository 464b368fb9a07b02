"""The HTTP protocol of `bridge serve`: an answer's head and body leave in one write."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from bridge import busypoll
from bridge.server import HttpProtocol, _JoinedWrites


def _in_a_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


REQUEST = b"GET /x HTTP/1.1\r\nHost: gateway\r\n\r\n"


class _Transport(asyncio.Transport):
    """What the socket would have sent, one entry per system call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False
        self.aborted = False

    def write(self, data: Any) -> None:
        assert not self.closing, "a write after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _serve(
    app: Any, request: bytes = REQUEST, made: list[_Transport] | None = None
) -> _Transport:
    """One request through HttpProtocol on a recording transport (also put in
    `made`, for the app to look at); its writes."""
    config = Config(app=app, http=HttpProtocol, lifespan="off", log_config=None)
    config.load()
    state = ServerState()
    protocol = HttpProtocol(config, state, {}, _loop=asyncio.get_running_loop())
    transport = _Transport()
    if made is not None:
        made.append(transport)
    protocol.connection_made(transport)
    protocol.data_received(request)
    while state.tasks:
        await asyncio.gather(*state.tasks)
    await asyncio.sleep(0)  # a turn of the loop: what is held goes out at its end
    protocol.connection_lost(None)
    return transport


async def _json_app(scope: Any, receive: Any, send: Any) -> None:
    body = b'{"resourceType":"Patient"}'
    headers = [(b"content-type", b"application/fhir+json"), (b"content-length", b"26")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@_in_a_loop
async def test_an_answer_leaves_in_one_write() -> None:
    transport = await _serve(_json_app)
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 26" in head
    assert body == b'{"resourceType":"Patient"}'


@_in_a_loop
async def test_a_streamed_answer_keeps_its_order_and_loses_nothing() -> None:
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one,", "more_body": True})
        await send({"type": "http.response.body", "body": b"two,", "more_body": True})
        asyncio.get_running_loop().call_later(0.01, release.set)
        await release.wait()
        await send({"type": "http.response.body", "body": b"three", "more_body": False})

    transport = await _serve(app)
    raw = b"".join(transport.writes)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.endswith(b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n")
    # The head with the first chunk; then each chunk as it is sent.
    assert len(transport.writes) == 3
    assert transport.writes[1] == b"4\r\ntwo,\r\n"


@_in_a_loop
async def test_nothing_is_held_once_the_app_has_sent_a_body_message() -> None:
    made: list[_Transport] = []
    seen: list[list[bytes]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        seen.append(list(made[0].writes))  # the head waits for the body
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        seen.append(list(made[0].writes))  # a HEAD answer: the head alone, now

    await _serve(app, b"HEAD /x HTTP/1.1\r\nHost: gateway\r\n\r\n", made)
    assert seen[0] == []
    assert len(seen[1]) == 1
    assert seen[1][0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert seen[1][0].endswith(b"\r\n\r\n")


@_in_a_loop
async def test_a_head_the_app_does_not_follow_at_once_goes_out_at_the_end_of_the_turn() -> None:
    made: list[_Transport] = []
    seen: list[list[bytes]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.01)
        seen.append(list(made[0].writes))
        await send({"type": "http.response.body", "body": b"late"})

    transport = await _serve(app, made=made)
    assert len(seen[0]) == 1
    assert seen[0][0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[1:] == [b"4\r\nlate\r\n0\r\n\r\n"]


@_in_a_loop
async def test_an_answer_the_app_fails_to_give_is_a_500_in_one_write() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    transport = await _serve(app)
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


@_in_a_loop
async def test_a_bad_request_is_answered_before_the_connection_closes() -> None:
    transport = await _serve(_json_app, b"NOT HTTP AT ALL\r\n\r\n")
    assert transport.closing
    assert b"".join(transport.writes).startswith(b"HTTP/1.1 400 Bad Request\r\n")


@_in_a_loop
async def test_a_request_that_is_not_http_is_a_400_operation_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = b"GET /fhir/Patient/100001?x=1 HTTP/1.1\r\nHost: gateway\r\nAccept: \x01\r\n\r\n"
    transport = await _serve(_json_app, request)
    head, _, body = b"".join(transport.writes).partition(b"\r\n\r\n")
    assert transport.closing
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\ncontent-type: application/fhir+json; charset=utf-8\r\n" in head
    assert b"\r\nconnection: close" in head
    assert b"\r\ncontent-length: %d" % len(body) in head
    assert orjson.loads(body) == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "structure",
                "diagnostics": "The request is not well-formed HTTP/1.1; it was not processed.",
            }
        ],
    }
    assert "100001" not in caplog.text


@_in_a_loop
async def test_a_held_write_goes_out_at_the_end_of_the_turn() -> None:
    inner = _Transport()
    joined = _JoinedWrites(inner, asyncio.get_running_loop())
    joined.write(b"head")
    assert inner.writes == []
    assert joined.get_write_buffer_size() == 4
    await asyncio.sleep(0)
    assert inner.writes == [b"head"]
    joined.write(b"")  # nothing to hold
    await asyncio.sleep(0)
    assert inner.writes == [b"head"]


@_in_a_loop
async def test_closing_sends_what_is_held_first_and_aborting_drops_it() -> None:
    inner = _Transport()
    joined = _JoinedWrites(inner, asyncio.get_running_loop())
    joined.writelines([b"a", b"b"])
    joined.close()
    assert inner.writes == [b"ab"]
    assert inner.closing
    await asyncio.sleep(0)  # the end-of-turn flush finds nothing left
    assert inner.writes == [b"ab"]

    inner = _Transport()
    joined = _JoinedWrites(inner, asyncio.get_running_loop())
    joined.write(b"a")
    joined.abort()
    await asyncio.sleep(0)
    assert inner.writes == []
    assert inner.aborted


@_in_a_loop
async def test_a_write_held_when_the_peer_went_away_is_dropped() -> None:
    inner = _Transport()
    joined = _JoinedWrites(inner, asyncio.get_running_loop())
    joined.write(b"a")
    inner.closing = True  # the connection was lost meanwhile
    await asyncio.sleep(0)
    assert inner.writes == []


@_in_a_loop
async def test_other_calls_reach_the_transport() -> None:
    inner = _Transport()
    joined = _JoinedWrites(inner, asyncio.get_running_loop())
    assert joined.get_extra_info("peername") == ("127.0.0.1", 50000)
    assert joined.is_closing() is False


@pytest.mark.parametrize("data", [bytearray(b"body"), memoryview(b"body")])
@_in_a_loop
async def test_buffers_of_any_kind_are_joined(data: Any) -> None:
    inner = _Transport()
    joined = _JoinedWrites(inner, asyncio.get_running_loop())
    joined.write(data)
    joined.write(data)
    assert inner.writes == [b"bodybody"]


@_in_a_loop
async def test_a_large_body_goes_out_with_the_head_without_a_copy() -> None:
    inner = _Transport()
    sent: list[tuple[bytes, ...]] = []
    inner.writelines = lambda data: sent.append(tuple(data))  # type: ignore[method-assign]
    joined = _JoinedWrites(inner, asyncio.get_running_loop())
    body = b"x" * (1 << 20)
    joined.write(b"head")
    joined.write(body)
    assert inner.writes == []
    assert len(sent) == 1
    assert sent[0][0] == b"head"
    assert sent[0][1] is body


@_in_a_loop
async def test_one_keep_alive_timer_a_connection_closes_it_once_idle_long_enough() -> None:
    config = Config(app=_json_app, http=HttpProtocol, lifespan="off", log_config=None)
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    protocol = HttpProtocol(config, state, {}, _loop=loop)
    transport = _Transport()
    protocol.connection_made(transport)

    async def answered() -> None:
        protocol.data_received(REQUEST)
        while state.tasks:
            await asyncio.gather(*state.tasks)

    await answered()
    timer = protocol.timeout_keep_alive_task
    assert timer is not None  # idle: the timer runs
    for _ in range(3):  # later answers keep that timer: none made, none cancelled
        await answered()
        assert protocol.timeout_keep_alive_task is timer
        assert not timer.cancelled()
    protocol.data_received(b"GET /x HTTP/1.1\r\n")  # a request under way: busy
    protocol._keep_alive_due()  # the timer fires while busy: no timer until idle again
    assert protocol.timeout_keep_alive_task is None
    protocol.data_received(b"Host: gateway\r\n\r\n")
    while state.tasks:
        await asyncio.gather(*state.tasks)
    timer = protocol.timeout_keep_alive_task
    assert timer is not None
    # Fired before the connection was idle for the whole timeout: it waits out the rest.
    protocol._keep_alive_due()
    assert protocol.timeout_keep_alive_task not in (None, timer)
    assert not transport.closing
    # Idle for the whole timeout: closed.
    protocol._idle_since = loop.time() - config.timeout_keep_alive
    protocol._keep_alive_due()
    assert transport.closing
    assert len(transport.writes) == 5  # every answer went out

    # A connection lost while idle leaves no timer behind.
    protocol = HttpProtocol(config, state, {}, _loop=loop)
    protocol.connection_made(_Transport())
    protocol.data_received(REQUEST)
    while state.tasks:
        await asyncio.gather(*state.tasks)
    timer = protocol.timeout_keep_alive_task
    assert timer is not None
    protocol.connection_lost(None)
    assert timer.cancelled()
    assert protocol.timeout_keep_alive_task is None


@pytest.mark.parametrize(("close", "stretches"), [(False, 1), (True, 0)])
@_in_a_loop
async def test_an_answer_on_a_connection_kept_alive_starts_polling(
    close: bool, stretches: int
) -> None:
    # The client's next request may come within the window (bridge/busypoll.py); a
    # connection that closes brings none.
    request = REQUEST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") if close else REQUEST
    busypoll.configure(0.0005)
    try:
        await _serve(_json_app, request)
        poll = busypoll.current()
        assert (poll.stretches if poll is not None else 0) == stretches
    finally:
        busypoll.configure(0)
