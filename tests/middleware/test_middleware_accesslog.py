"""The access log's direct path: one JSON line per request, written once per turn of the loop."""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import Receive, Scope, Send

from bridge.middleware import AccessLogMiddleware, accesslog
from tests.middleware.support import CountedStream


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _scope(n: int) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": f"/fhir/Patient/{n}",
        "headers": [],
        "state": {"request_id": f"r{n}"},
    }


def test_requests_served_together_are_logged_in_one_write_at_the_end_of_the_turn(
    stream: CountedStream,
) -> None:
    app = AccessLogMiddleware(_ok)

    async def send(message: object) -> None:
        return None

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    async def main() -> None:
        await asyncio.gather(*(app(_scope(n), receive, send) for n in range(5)))
        await asyncio.sleep(0)

    asyncio.run(main())
    assert stream.writes == 1
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == [f"r{n}" for n in range(5)]
    assert {line["status"] for line in lines} == {200}
    # Never the path: ids are identifiers.
    assert "/fhir/Patient/3" not in stream.getvalue()
    assert {line["logger"] for line in lines} == {"bridge.access"}


def test_lines_left_by_a_loop_that_stopped_go_out_with_the_next_loops(
    stream: CountedStream,
) -> None:
    app = AccessLogMiddleware(_ok)

    async def send(message: object) -> None:
        return None

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    stopped = asyncio.new_event_loop()
    stopped.close()  # its flush of the line below never ran
    accesslog._flushing[0] = stopped
    accesslog._lines.append('{"request_id":"r1"}\n')

    async def main() -> None:
        await app(_scope(2), receive, send)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert stream.writes == 1
    assert [orjson.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == [
        "r1",
        "r2",
    ]
