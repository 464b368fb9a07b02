"""The answer's status, noted once by the outermost layer that reports it."""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from bridge.metrics import Metrics, MetricsMiddleware
from bridge.middleware import AccessLogMiddleware, RequestIdMiddleware
from bridge.middleware.status import STATUS, noting

_SERVED = {"Patient"}.__contains__  # the resource types the metrics label


def _answering(status: int, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


async def _raising(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("before any answer")


def _serve(app: Any, path: str = "/fhir/Patient/7") -> tuple[list[Message], dict[str, Any]]:
    sent: list[Message] = []
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": path, "headers": []}

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request"}

    async def main() -> None:
        with contextlib.suppress(RuntimeError):  # `_raising`: the server answers 500
            await app(scope, receive, send)
        await asyncio.sleep(0)  # the access log's flush at the end of the turn

    asyncio.run(main())
    return sent, scope["state"]


def _logged(out: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_inside_the_request_id_layer_no_layer_wraps_send_again() -> None:
    seen: list[Send] = []

    def spy(app: Any) -> Any:
        async def layer(scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(send)
            await app(scope, receive, send)

        return layer

    metrics = Metrics(lambda: [])
    inner = spy(_answering(404))
    app = RequestIdMiddleware(
        spy(AccessLogMiddleware(spy(MetricsMiddleware(inner, metrics=metrics, served=_SERVED))))
    )
    sent, state = _serve(app)
    outer_send, below_log, below_metrics = seen
    assert below_log is outer_send and below_metrics is outer_send
    assert state[STATUS] == 404
    assert sent[0]["status"] == 404


def test_the_status_an_inner_layer_answered_is_what_the_log_and_metrics_report(
    stream: io.StringIO,
) -> None:
    metrics = Metrics(lambda: [])
    app = RequestIdMiddleware(
        AccessLogMiddleware(MetricsMiddleware(_answering(503), metrics=metrics, served=_SERVED))
    )
    _serve(app)
    (line,) = _logged(stream)
    assert line["status"] == 503
    text = metrics.render().decode()
    assert 'bridge_requests_total{interaction="read",resource="Patient",status="503"} 1.0' in text


def test_a_layer_alone_notes_the_status_itself(stream: io.StringIO) -> None:
    metrics = Metrics(lambda: [])
    _serve(AccessLogMiddleware(_answering(201)))
    _serve(MetricsMiddleware(_answering(202), metrics=metrics, served=_SERVED))
    (line,) = _logged(stream)
    assert line["status"] == 201
    assert 'status="202"} 1.0' in metrics.render().decode()


def test_an_app_that_raised_before_answering_is_reported_as_500(stream: io.StringIO) -> None:
    metrics = Metrics(lambda: [])
    sent, state = _serve(
        RequestIdMiddleware(
            AccessLogMiddleware(MetricsMiddleware(_raising, metrics=metrics, served=_SERVED))
        )
    )
    assert sent == []
    assert state[STATUS] == 500
    (line,) = _logged(stream)
    assert line["status"] == 500
    assert 'status="500"} 1.0' in metrics.render().decode()


def test_the_request_id_header_replaces_one_the_app_set_and_keeps_the_others() -> None:
    app = RequestIdMiddleware(
        _answering(200, [(b"content-type", b"application/fhir+json"), (b"X-Request-ID", b"x")])
    )
    sent, state = _serve(app)
    headers = sent[0]["headers"]
    assert (b"content-type", b"application/fhir+json") in headers
    ids = [value for name, value in headers if name.lower() == b"x-request-id"]
    assert ids == [state["request_id"].encode()]


def test_noting_twice_wraps_send_once() -> None:
    scope: dict[str, Any] = {"type": "http"}

    async def send(message: Message) -> None:
        return None

    state, first = noting(scope, send)
    again_state, again = noting(scope, first)
    assert first is not send and again is first and again_state is state
    assert state[STATUS] == 500


def test_an_answer_a_middle_layer_replaced_is_reported_as_sent(stream: io.StringIO) -> None:
    """As the audit layer does when the trail cannot be written: the app's 200 is
    swallowed and a 503 goes out instead."""

    def replacing(app: Any) -> Any:
        async def layer(scope: Scope, receive: Receive, send: Send) -> None:
            async def swap(message: Message) -> None:
                if message["type"] == "http.response.start":
                    await _answering(503)(scope, receive, send)
                    return
                if message["type"] == "http.response.body" and message.get("body") == b"{}":
                    return  # the swallowed answer's body
                await send(message)

            await app(scope, receive, swap)

        return layer

    metrics = Metrics(lambda: [])
    app = RequestIdMiddleware(
        AccessLogMiddleware(
            MetricsMiddleware(replacing(_answering(200)), metrics=metrics, served=_SERVED)
        )
    )
    sent, _ = _serve(app)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [503]
    (line,) = _logged(stream)
    assert line["status"] == 503
    assert 'status="503"} 1.0' in metrics.render().decode()


def test_a_client_request_id_with_a_trailing_newline_is_replaced() -> None:
    app = RequestIdMiddleware(_answering(200))
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request"}

    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/fhir/Patient/7",
        "headers": [(b"x-request-id", b"abc\n")],
    }
    asyncio.run(app(scope, receive, send))
    assert scope["state"]["request_id"] != "abc\n"
    assert len(scope["state"]["request_id"]) == 16
