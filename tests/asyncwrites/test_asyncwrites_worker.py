"""Delivering queued writes when an attempt fails in a way no retry can mend.

The queue is the real one, in a SQLite store; the gateway is a stand-in whose
create raises what a bug would (OverflowError, KeyError), before or after its
legacy call went out. Such a job must end, in the failed state with an
OperationOutcome and one log line per attempt, and the patient's later writes
must go; a write that may have been applied is checked, never sent blindly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.asyncwrites import Deliveries, Job, JobQueue, note_attempt_call
from bridge.settings import AsyncWriteSettings
from bridge.store import Store

LANE = "Patient/100007"
SECRET = "Jane Q. Private"  # in the body: must never reach a log
FAST = AsyncWriteSettings(
    workers=1,
    poll_interval=0.05,
    lease=2,
    retry_base=0.01,
    retry_cap=0.05,
    unsure_delay=0,
    measure_interval=60,
)
Create = Callable[[dict[str, Any]], Awaitable[Any]]


class _Gateway:
    """Just enough of a Gateway: Observation create, one legacy call `AddReading`,
    no lookup (so an unsure create cannot be checked)."""

    def __init__(self, create: Create, broken_lookup: bool = False) -> None:
        call = SimpleNamespace(operation="AddReading")
        spec = SimpleNamespace(steps=[SimpleNamespace(call=call)], lookup=None)
        served = SimpleNamespace(resource=SimpleNamespace(create=spec))
        self.routes = {"Observation": {"create": served}}
        self.creates = 0
        self._create = create
        self._broken_lookup = broken_lookup

    def route(self, rtype: str, interaction: str) -> Any:
        if self._broken_lookup:
            raise ZeroDivisionError  # a bug in checking an unsure write
        return self.routes[rtype][interaction]

    async def create(
        self, rtype: str, body: Any, base: str, if_none_exist: str | None = None
    ) -> Any:
        self.creates += 1
        return await self._create(body)


async def _stored(body: dict[str, Any]) -> Any:
    note_attempt_call("AddReading", "ok")
    return SimpleNamespace(status=201, location=f"Observation/{body['n']}", resource=body)


def _request(n: int, **extra: Any) -> dict[str, Any]:
    body = {"resourceType": "Observation", "n": n, "note": [{"text": SECRET}]}
    return {"kind": "create", "type": "Observation", "id": None, "body": body, "base": "", **extra}


def _deliver(tmp_path: Path, gateway: _Gateway, requests: list[dict[str, Any]]) -> list[Job]:
    """Queue the writes in one lane, run a delivery loop until all are finished."""

    async def main() -> list[Job]:
        store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
        try:
            queue = JobQueue(store, "worker-1", lease=FAST.lease)
            ids = [
                await queue.add(client_id="app", lanes=[LANE], request=request)
                for request in requests
            ]
            deliveries = Deliveries(queue, lambda: gateway, FAST)  # type: ignore[arg-type, return-value]
            deliveries.start()
            try:
                deadline = time.monotonic() + 20
                while True:
                    jobs = [await queue.get(job_id, "app") for job_id in ids]
                    if all(j is not None and not j.pending for j in jobs):
                        return [j for j in jobs if j is not None]
                    assert time.monotonic() < deadline, [j.state for j in jobs if j]
                    await asyncio.sleep(0.05)
            finally:
                await deliveries.close()
        finally:
            await store.close()

    return asyncio.run(main())


def _diagnostics(job: Job) -> str:
    assert job.result is not None
    outcome = job.result["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    return str(outcome["issue"][0]["diagnostics"])


def _lines(caplog: pytest.LogCaptureFixture, job: Job) -> list[str]:
    return [r.getMessage() for r in caplog.records if job.id in r.getMessage()]


def test_an_unexpected_error_before_any_legacy_call_fails_the_job_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def create(body: dict[str, Any]) -> Any:
        if body["n"] == 1:
            raise OverflowError("date value out of range")  # before any call went out
        return await _stored(body)

    gateway = _Gateway(create)
    with caplog.at_level(logging.ERROR, logger="bridge.asyncwrites"):
        bad, later = _deliver(tmp_path, gateway, [_request(1), _request(2)])
    assert (bad.state, bad.status, bad.attempts) == ("failed", 500, 1)
    assert bad.result is not None and bad.result["response"]["status"] == "500"
    assert _diagnostics(bad) == (
        "The server met an unexpected condition delivering this write; the legacy system "
        "did not receive it."
    )
    assert (later.state, later.status) == ("done", 201)  # the lane moved on
    assert gateway.creates == 2
    assert _lines(caplog, bad) == [
        f"delivering job {bad.id} failed: OverflowError; nothing was sent"
    ]
    assert SECRET not in caplog.text and "out of range" not in caplog.text


def test_an_unexpected_error_after_the_write_went_out_is_checked_never_resent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def create(body: dict[str, Any]) -> Any:
        if body["n"] == 1:
            note_attempt_call("AddReading", "ok")  # applied, then our side broke
            raise KeyError("ReadingId")
        return await _stored(body)

    gateway = _Gateway(create)
    with caplog.at_level(logging.ERROR, logger="bridge.asyncwrites"):
        unsure, later = _deliver(tmp_path, gateway, [_request(1), _request(2)])
    # The second attempt checks; without a lookup it cannot tell, so it says so.
    assert (unsure.state, unsure.status, unsure.attempts) == ("failed", 504, 2)
    assert "may or may not have been applied" in _diagnostics(unsure)
    assert gateway.creates == 2  # the unsure write once, the later one once
    assert (later.state, later.status) == ("done", 201)
    assert _lines(caplog, unsure) == [
        f"delivering job {unsure.id} failed: KeyError; it will be checked"
    ]
    assert SECRET not in caplog.text


def test_an_unexpected_error_that_recurs_after_the_check_fails_the_job_for_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def create(body: dict[str, Any]) -> Any:
        note_attempt_call("AddReading", "ok")
        raise KeyError("ReadingId")

    gateway = _Gateway(create)
    # A conditional create is sent again after an interruption (its condition
    # finds a stored copy): the same error then ends it instead of a third try.
    request = _request(1, if_none_exist="identifier=urn:x|1")
    with caplog.at_level(logging.ERROR, logger="bridge.asyncwrites"):
        (job,) = _deliver(tmp_path, gateway, [request])
    assert (job.state, job.status, job.attempts) == ("failed", 504, 2)
    assert _diagnostics(job) == (
        "The server met an unexpected condition after this write reached the legacy system; "
        "it may or may not have been applied. Check the legacy system before sending it "
        "again; sending it blindly may apply it twice."
    )
    assert gateway.creates == 2
    assert _lines(caplog, job) == [
        f"delivering job {job.id} failed: KeyError; it will be checked",
        f"delivering job {job.id} failed again: KeyError",
    ]


def test_an_unexpected_error_while_checking_an_unsure_write_fails_it_as_unknown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def create(body: dict[str, Any]) -> Any:
        note_attempt_call("AddReading", "ok")
        gateway._broken_lookup = True  # the check of the next attempt breaks
        raise KeyError("ReadingId")

    gateway = _Gateway(create)
    with caplog.at_level(logging.ERROR, logger="bridge.asyncwrites"):
        (job,) = _deliver(tmp_path, gateway, [_request(1)])
    assert (job.state, job.status, job.attempts) == ("failed", 504, 2)
    assert _diagnostics(job).startswith(
        "The server met an unexpected condition checking whether an interrupted delivery "
        "of this write was applied; it may or may not have been."
    )
    assert gateway.creates == 1
    assert _lines(caplog, job)[-1] == (
        f"job {job.id}: checking an interrupted delivery failed: ZeroDivisionError"
    )


def test_a_write_an_earlier_attempt_sent_is_never_said_not_received(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[int] = []

    async def create(body: dict[str, Any]) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            note_attempt_call("AddReading", "ok")  # the first attempt applied it
        raise KeyError("ReadingId")  # the second breaks before any call of its own

    gateway = _Gateway(create)
    request = _request(1, if_none_exist="identifier=urn:x|1")
    with caplog.at_level(logging.ERROR, logger="bridge.asyncwrites"):
        (job,) = _deliver(tmp_path, gateway, [request])
    assert (job.state, job.status, job.attempts) == ("failed", 504, 2)
    assert "may or may not have been applied" in _diagnostics(job)
    assert "did not receive it" not in _diagnostics(job)
