"""Deep paging under load: concurrent walks resume their own legacy cursors.

The gateway runs in process, so a test can lease one of its sessions and read
its counters, in front of the real mock EHR over HTTP (the legacy calls are
counted by the mock, `/_mock/stats`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.fhir.paging import PageTokens
from bridge.gateway import Gateway
from bridge.mapping.compiler import compile_system
from bridge.mock import MockHospital
from bridge.soap.http import HttpTransport
from bridge.soap.transport import SoapRequest, SoapResponse, Transport

pytestmark = pytest.mark.e2e

BASE = "http://gateway.test/fhir"
HOSPITAL = Path(__file__).resolve().parents[2] / "mappings" / "hospital"
FEMALE = [("gender", "female"), ("_count", "25")]  # one legacy page per FHIR page
MALE = [("gender", "male"), ("_count", "25")]


def _gateway(
    url: str,
    *,
    max_sessions: int = 4,
    wait_timeout: float = 5.0,
    wrap: Callable[[Transport], Transport] | None = None,
) -> Gateway:
    system = compile_system(HOSPITAL, {}, endpoint=url)
    system = dataclasses.replace(system, max_sessions=max_sessions, wait_timeout=wait_timeout)

    def transport(_: Any) -> Transport:
        inner = HttpTransport(connect_timeout=3, max_connections=16)
        return wrap(inner) if wrap is not None else inner

    return Gateway(
        [system], page_tokens=PageTokens(b"paging under load"), transport_factory=transport
    )


def _next(bundle: dict[str, Any]) -> str:
    for link in bundle.get("link", []):
        if link["relation"] == "next":
            return str(link["url"]).split("_page=", 1)[1]
    raise AssertionError("the page has no next link")


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


async def _walk(gateway: Gateway, params: list[tuple[str, str]], pages: int) -> list[list[str]]:
    bundle = await gateway.search("Patient", params, BASE)
    walked = [_ids(bundle)]
    while len(walked) < pages:
        bundle = await gateway.next_page("Patient", _next(bundle), BASE)
        walked.append(_ids(bundle))
    return walked


def _calls(hospital: MockHospital) -> dict[str, int]:
    return dict(hospital.stats()["ehr"]["calls"])


def _delta(after: dict[str, int], before: dict[str, int], op: str) -> int:
    return after.get(op, 0) - before.get(op, 0)


def test_concurrent_walks_resume_their_own_cursors(mock_hospital: MockHospital) -> None:
    walks, pages = 12, 10

    async def main() -> tuple[Any, ...]:
        gateway = _gateway(mock_hospital.ehr_url)
        backend = gateway.backends["hospital"]
        try:
            reference = await _walk(gateway, FEMALE, pages)
            before, counted = _calls(mock_hospital), backend.stats.pages["resumed"]
            walked = await asyncio.gather(*(_walk(gateway, FEMALE, pages) for _ in range(walks)))
            after, resumed = _calls(mock_hospital), backend.stats.pages["resumed"] - counted
        finally:
            await gateway.close()
        return reference, walked, before, after, resumed

    reference, walked, before, after, resumed = asyncio.run(main())

    assert all(w == reference for w in walked)  # every walk got its own records
    # One FindPatients per walk and one FetchNext per later page: no replays.
    assert _delta(after, before, "FindPatients") == walks
    assert _delta(after, before, "FetchNext") == walks * (pages - 1)
    assert resumed == walks * (pages - 1)


def test_a_new_search_gets_its_turn_while_walks_want_every_session(
    mock_hospital: MockHospital,
) -> None:
    walks, pages = 16, 25

    async def main() -> tuple[float, dict[str, Any], bool]:
        # One session, wanted all the time by the walks whose cursors it holds.
        gateway = _gateway(mock_hospital.ehr_url, max_sessions=1, wait_timeout=1.0)
        try:
            before = _calls(mock_hospital)
            tasks = [asyncio.create_task(_walk(gateway, FEMALE, pages)) for _ in range(walks)]
            while True:  # until the walks are a couple of pages deep
                now = await asyncio.to_thread(_calls, mock_hospital)
                if _delta(now, before, "FetchNext") >= 2 * walks:
                    break
                await asyncio.sleep(0.005)
            started = time.perf_counter()
            late = await gateway.search("Patient", [("family", "Smith")], BASE)
            waited = time.perf_counter() - started
            walking = not all(t.done() for t in tasks)
            await asyncio.gather(*tasks)
        finally:
            await gateway.close()
        return waited, late, walking

    waited, late, walking = asyncio.run(main())

    assert late["total"] > 0  # not a 503 after waiting for the walks to end
    assert walking  # it was served while the walks went on
    assert waited < 1.0


class OneCursorPerSession:
    """A legacy system that calls every cursor "1": a session's new search replaces it."""

    _CURSOR = re.compile(rb"(<(?:[\w.-]+:)?CursorId>)([^<]*)(<)")

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.current = b""  # the mock's id of the one cursor (the pool has one session)

    async def send(self, request: SoapRequest) -> SoapResponse:
        body = self._CURSOR.sub(lambda m: m[1] + self.current + m[3], request.body)
        response = await self.inner.send(dataclasses.replace(request, body=body))
        found = self._CURSOR.search(response.body)
        if found is None or not found[2].strip():
            return response
        self.current = found[2].strip()
        answer = self._CURSOR.sub(lambda m: m[1] + b"1" + m[3], response.body)
        return dataclasses.replace(response, body=answer)

    async def close(self) -> None:
        await self.inner.close()


def test_a_link_never_resumes_a_cursor_of_another_search(mock_hospital: MockHospital) -> None:
    async def main() -> tuple[list[list[str]], dict[str, Any], dict[str, int]]:
        gateway = _gateway(mock_hospital.ehr_url, max_sessions=1, wrap=OneCursorPerSession)
        try:
            reference = await _walk(gateway, FEMALE, 2)
            first = await gateway.search("Patient", FEMALE, BASE)
            await gateway.search("Patient", MALE, BASE)  # cursor "1" is now this search's
            second = await gateway.next_page("Patient", _next(first), BASE)
            pages = dict(gateway.backends["hospital"].stats.pages)
        finally:
            await gateway.close()
        return reference, second, pages

    reference, second, pages = asyncio.run(main())

    assert _ids(second) == reference[1]
    assert {e["resource"]["gender"] for e in second["entry"]} == {"female"}
    assert pages["replayed: cursor not held"] == 1


def test_a_link_whose_cursor_is_gone_does_not_wait_for_its_busy_session(
    mock_hospital: MockHospital,
) -> None:
    async def main() -> tuple[list[str], list[str], float, dict[str, int]]:
        gateway = _gateway(mock_hospital.ehr_url, max_sessions=2)
        backend = gateway.backends["hospital"]
        backend.pool.prefer_wait = 3.0
        try:
            first = await gateway.search("Patient", FEMALE, BASE)
            link = _next(first)
            second = await gateway.next_page("Patient", link, BASE)  # takes the cursor
            hint = gateway.page_tokens.open(link).hint
            assert hint is not None
            busy = await backend.pool.acquire(prefer=hint[0])
            assert busy.key == hint[0]
            try:
                started = time.perf_counter()
                again = await gateway.next_page("Patient", link, BASE)
                waited = time.perf_counter() - started
            finally:
                backend.pool.release(busy)
            pages = dict(backend.stats.pages)
        finally:
            await gateway.close()
        return _ids(second), _ids(again), waited, pages

    second, again, waited, pages = asyncio.run(main())

    assert again == second  # the same page, by a replay on the other session
    assert waited < 1.5
    assert pages["resumed"] == 1
    assert pages["replayed: cursor not held"] == 1


def test_a_link_waits_for_the_busy_session_that_holds_its_cursor(
    mock_hospital: MockHospital,
) -> None:
    async def main() -> tuple[list[list[str]], list[str], dict[str, int], dict[str, int]]:
        gateway = _gateway(mock_hospital.ehr_url, max_sessions=2)
        backend = gateway.backends["hospital"]
        try:
            reference = await _walk(gateway, FEMALE, 2)
            first = await gateway.search("Patient", FEMALE, BASE)
            link = _next(first)
            hint = gateway.page_tokens.open(link).hint
            assert hint is not None
            busy = await backend.pool.acquire(prefer=hint[0])
            before = _calls(mock_hospital)
            task = asyncio.create_task(gateway.next_page("Patient", link, BASE))
            await asyncio.sleep(0.2)
            assert not task.done()  # waiting for that session, not replaying on the other
            backend.pool.release(busy)
            second = await task
            after = _calls(mock_hospital)
        finally:
            await gateway.close()
        return reference, _ids(second), before, after

    reference, second, before, after = asyncio.run(main())

    assert second == reference[1]
    assert _delta(after, before, "FindPatients") == 0
    assert _delta(after, before, "FetchNext") == 1
