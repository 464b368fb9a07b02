"""Retries and deadlines: which failures are retried, how long the pauses are,
and how the deadline bounds every wait. A fake clock and a fake sleep: nothing
here waits or measures time."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.errors import BackendTimeout, BackendUnavailable
from bridge.mapping.compiled import CompiledSystem
from bridge.mapping.compiler import compile_system
from bridge.soap.backend import Backend, DeadlineExceeded
from bridge.soap.pool import Session, SessionPool
from bridge.soap.retry import Deadline, RetryPolicy
from bridge.soap.transport import ConnectionLost, ReadTimeout, SoapRequest, SoapResponse, Unsent

FIXTURES = Path(__file__).parent / "fixtures"
TNS = "urn:hospital:ehr"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Legacy:
    """A transport: per operation, a script of answers or exceptions; then success."""

    def __init__(self, clock: Clock, call_cost: float = 0.0) -> None:
        self.clock = clock
        self.call_cost = call_cost
        self.requests: list[SoapRequest] = []
        self.script: dict[str, list[SoapResponse | Exception]] = {}
        self._tokens = itertools.count(1)

    async def send(self, request: SoapRequest) -> SoapResponse:
        self.requests.append(request)
        self.clock.now += self.call_cost
        await asyncio.sleep(0)
        queued = self.script.get(request.operation)
        if queued:
            step = queued.pop(0)
            if isinstance(step, Exception):
                raise step
            return step
        if request.operation == "Login":
            token = f"TOKEN-{next(self._tokens)}".encode()
            body = (FIXTURES / "login_response.xml").read_bytes().replace(b"SESSION-TOKEN", token)
            return SoapResponse(200, body)
        return SoapResponse(200, (FIXTURES / "get_patient_response.xml").read_bytes())

    async def close(self) -> None:
        pass

    def sent(self, operation: str) -> list[SoapRequest]:
        return [r for r in self.requests if r.operation == operation]


@pytest.fixture(scope="module")
def system() -> CompiledSystem:
    return compile_system(Path("mappings/hospital"), {})


def make(
    system: CompiledSystem,
    legacy: Legacy,
    clock: Clock,
    *,
    policy: RetryPolicy,
    jitter: Callable[[], float] = lambda: 0.5,
    timeout: float = 10.0,
    max_sessions: int = 4,
) -> tuple[Backend, list[float]]:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock.now += seconds

    backend = Backend(
        name="hospital",
        endpoint="http://ehr.test/ehr",
        transport=legacy,
        pool=SessionPool(max_size=max_sessions, idle_timeout=300, wait_timeout=5, clock=clock),
        style=system.session,
        fault_code_path=system.fault_code_path,
        timeout=timeout,
        policy=policy,
        clock=clock,
        sleep=sleep,
        jitter=jitter,
    )
    return backend, pauses


def get_patient(system: CompiledSystem, backend: Backend) -> Callable[[Session], object]:
    read = system.resources["Patient"].read
    assert read is not None
    template = read.call.template

    async def work(session: Session) -> object:
        return await backend.call(session, template, {"MRN": "100001"})

    return work


# -- the policy and the deadline, alone -----------------------------------------


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    policy = RetryPolicy(retries=6, backoff_base=0.1, backoff_cap=0.5)
    assert [policy.backoff(n, lambda: 1.0) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_backoff_is_full_jitter_below_the_ceiling() -> None:
    policy = RetryPolicy(backoff_base=0.2, backoff_cap=1.0)
    assert policy.backoff(2, lambda: 0.0) == 0.0
    assert policy.backoff(2, lambda: 0.25) == pytest.approx(0.1)


def test_deadline_counts_down_on_its_clock() -> None:
    clock = Clock()
    deadline = Deadline(3.0, clock)
    assert deadline.remaining() == 3.0
    assert deadline.cap(10.0) == 3.0
    clock.now += 2.5
    assert deadline.cap(10.0) == pytest.approx(0.5)
    assert deadline.cap(0.1) == 0.1
    assert not deadline.expired
    clock.now += 1
    assert deadline.expired
    assert deadline.remaining() == 0.0


# -- reads ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [ReadTimeout(), ConnectionLost(), Unsent(), BackendTimeout(), BackendUnavailable()],
    ids=["read-timeout", "connection-lost", "unsent", "plain-timeout", "plain-unavailable"],
)
def test_read_is_retried_after_a_transport_failure(
    system: CompiledSystem, failure: Exception
) -> None:
    clock = Clock()
    legacy = Legacy(clock)
    legacy.script["GetPatient"] = [failure]
    backend, pauses = make(system, legacy, clock, policy=RetryPolicy(retries=2, backoff_base=0.2))

    reply = asyncio.run(backend.run(get_patient(system, backend)))

    assert reply is not None
    assert len(legacy.sent("GetPatient")) == 2
    assert pauses == [0.1]  # jitter 0.5 of the first ceiling, 0.2
    assert sum(backend.stats.retries.values()) == 1
    assert backend.pool.in_use == 0


def test_read_retries_stop_at_the_configured_count(system: CompiledSystem) -> None:
    clock = Clock()
    legacy = Legacy(clock)
    legacy.script["GetPatient"] = [ReadTimeout() for _ in range(10)]
    policy = RetryPolicy(retries=3, backoff_base=0.1, backoff_cap=0.3)
    backend, pauses = make(system, legacy, clock, policy=policy, jitter=lambda: 1.0)

    with pytest.raises(ReadTimeout) as info:
        asyncio.run(backend.run(get_patient(system, backend)))

    assert len(legacy.sent("GetPatient")) == 4
    assert pauses == [0.1, 0.2, 0.3]
    assert info.value.status == 504
    assert info.value.diagnostics == (
        "The legacy system 'hospital' did not answer in time; retry later."
    )


def test_each_call_waits_at_most_what_is_left_of_the_deadline(system: CompiledSystem) -> None:
    clock = Clock()
    legacy = Legacy(clock, call_cost=2.0)  # every call takes 2 s of the fake clock
    policy = RetryPolicy(retries=5, deadline=5.0)
    backend, _ = make(system, legacy, clock, policy=policy, timeout=10.0)
    read = system.resources["Patient"].read
    assert read is not None
    template = read.call.template

    async def work(session: Session) -> None:
        for _ in range(5):
            await backend.call(session, template, {"MRN": "100001"})

    with pytest.raises(DeadlineExceeded) as info:
        asyncio.run(backend.run(work))

    # Login at 0 s (5 s left), then calls at 2 s and 4 s; none at 6 s.
    assert [r.timeout for r in legacy.requests] == [5.0, 3.0, 1.0]
    assert info.value.status == 504
    assert "'hospital'" in info.value.diagnostics
    assert "5 s" in info.value.diagnostics
    assert backend.stats.deadlines == 1


def test_no_retry_is_started_that_the_deadline_cannot_hold(system: CompiledSystem) -> None:
    clock = Clock()
    legacy = Legacy(clock, call_cost=0.9)
    legacy.script["GetPatient"] = [ReadTimeout() for _ in range(10)]
    policy = RetryPolicy(retries=10, backoff_base=1.0, backoff_cap=1.0, deadline=2.0)
    backend, pauses = make(system, legacy, clock, policy=policy, jitter=lambda: 1.0)

    with pytest.raises(BackendTimeout) as info:
        asyncio.run(backend.run(get_patient(system, backend)))

    assert info.value.status == 504
    # Login + GetPatient spend 1.8 s; a 1 s pause would end past the deadline.
    assert pauses == []
    assert len(legacy.sent("GetPatient")) == 1


def test_waiting_for_a_session_is_bounded_by_the_deadline(system: CompiledSystem) -> None:
    clock = Clock()
    legacy = Legacy(clock)
    backend, _ = make(system, legacy, clock, policy=RetryPolicy(deadline=0.01), max_sessions=1)

    async def main() -> None:
        held = await backend.pool.acquire()  # the only session is busy
        try:
            await backend.run(get_patient(system, backend))
        finally:
            backend.pool.release(held)

    # The pool waits in real time (0.01 s here), the deadline's clock must agree.
    backend._clock = __import__("time").monotonic
    with pytest.raises(DeadlineExceeded):
        asyncio.run(main())
    assert legacy.sent("GetPatient") == []


# -- writes -----------------------------------------------------------------------


@pytest.mark.parametrize("failure", [ReadTimeout(), ConnectionLost()], ids=["timeout", "lost"])
def test_write_is_never_retried_once_it_may_have_been_sent(
    system: CompiledSystem, failure: Exception
) -> None:
    clock = Clock()
    legacy = Legacy(clock)
    legacy.script["GetPatient"] = [failure]
    backend, pauses = make(system, legacy, clock, policy=RetryPolicy(retries=5))

    with pytest.raises(type(failure)):
        asyncio.run(backend.run(get_patient(system, backend), idempotent=False))

    assert len(legacy.sent("GetPatient")) == 1
    assert pauses == []


def test_write_is_retried_when_nothing_was_sent(system: CompiledSystem) -> None:
    clock = Clock()
    legacy = Legacy(clock)
    legacy.script["GetPatient"] = [Unsent()]
    backend, _ = make(system, legacy, clock, policy=RetryPolicy(retries=1))

    asyncio.run(backend.run(get_patient(system, backend), idempotent=False))

    assert len(legacy.sent("GetPatient")) == 2
    assert backend.stats.retries["connect"] == 1


def test_a_lost_login_before_a_write_is_retried(system: CompiledSystem) -> None:
    clock = Clock()
    legacy = Legacy(clock)
    legacy.script["Login"] = [ReadTimeout()]
    backend, _ = make(system, legacy, clock, policy=RetryPolicy(retries=1))

    asyncio.run(backend.run(get_patient(system, backend), idempotent=False))

    assert len(legacy.sent("Login")) == 2
    assert len(legacy.sent("GetPatient")) == 1


def test_write_is_not_rerun_after_one_of_its_calls_was_answered(system: CompiledSystem) -> None:
    clock = Clock()
    legacy = Legacy(clock)
    legacy.script["GetPatient"] = [
        SoapResponse(200, (FIXTURES / "get_patient_response.xml").read_bytes()),
        Unsent(),
    ]
    backend, _ = make(system, legacy, clock, policy=RetryPolicy(retries=3))
    read = system.resources["Patient"].read
    assert read is not None
    template = read.call.template

    async def two_calls(session: Session) -> None:
        await backend.call(session, template, {"MRN": "100001"})  # the write, answered
        await backend.call(session, template, {"MRN": "100001"})  # the read-back

    with pytest.raises(Unsent):
        asyncio.run(backend.run(two_calls, idempotent=False))
    assert len(legacy.sent("GetPatient")) == 2


def test_expired_session_on_a_write_reruns_it_only_before_any_answer(
    system: CompiledSystem,
) -> None:
    clock = Clock()
    legacy = Legacy(clock)
    expired = SoapResponse(500, (FIXTURES / "fault_session_expired.xml").read_bytes())
    legacy.script["GetPatient"] = [expired]
    backend, _ = make(system, legacy, clock, policy=RetryPolicy(retries=0))

    asyncio.run(backend.run(get_patient(system, backend), idempotent=False))

    assert len(legacy.sent("GetPatient")) == 2
    assert backend.stats.relogins == 1
