"""Backend: lazy login, one re-login on expiry, session limits, logout at close.

The legacy system is a fake transport that answers from XML fixture files and
records every request it is sent; nothing touches the network.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from lxml import etree

from bridge.errors import BackendError, BackendUnavailable, SessionLimitReached
from bridge.mapping.compiled import CompiledSystem
from bridge.mapping.compiler import compile_system
from bridge.soap.backend import Backend
from bridge.soap.envelope import EnvelopeTemplate
from bridge.soap.pool import Session, SessionPool
from bridge.soap.retry import RetryPolicy
from bridge.soap.transport import SoapRequest, SoapResponse
from bridge.soap.xml import SoapFault

FIXTURES = Path(__file__).parent / "fixtures"
TNS = "urn:hospital:ehr"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def ok(name: str) -> SoapResponse:
    return SoapResponse(200, fixture(name))


def fault(name: str) -> SoapResponse:
    return SoapResponse(500, fixture(name))


class FakeEhr:
    """A transport: canned answers per operation, in order, then the defaults."""

    def __init__(self) -> None:
        self.requests: list[SoapRequest] = []
        self.script: dict[str, list[SoapResponse]] = {}
        self.closed = False
        self._tokens = itertools.count(1)

    async def send(self, request: SoapRequest) -> SoapResponse:
        self.requests.append(request)
        await asyncio.sleep(0)  # a real transport yields to the loop
        queued = self.script.get(request.operation)
        if queued:
            return queued.pop(0)
        if request.operation == "Login":
            token = f"TOKEN-{next(self._tokens)}".encode()
            return SoapResponse(200, fixture("login_response.xml").replace(b"SESSION-TOKEN", token))
        if request.operation == "Logout":
            return ok("logout_response.xml")
        return ok("get_patient_response.xml")

    async def close(self) -> None:
        self.closed = True

    def sent(self, operation: str) -> list[SoapRequest]:
        return [r for r in self.requests if r.operation == operation]


def session_id(request: SoapRequest) -> str | None:
    """The token a request carries, in the SOAP header or (for Logout) the body."""
    root = etree.fromstring(request.body)
    return root.findtext(f"{{{SOAP_ENV}}}Header/{{{TNS}}}SessionHeader/{{{TNS}}}SessionId") or (
        root.findtext(f"{{{SOAP_ENV}}}Body/{{{TNS}}}Logout/{{{TNS}}}SessionId")
    )


@pytest.fixture(scope="module")
def system() -> CompiledSystem:
    return compile_system(Path("mappings/hospital"), {})


@pytest.fixture
def ehr() -> FakeEhr:
    return FakeEhr()


def make_backend(
    system: CompiledSystem,
    transport: FakeEhr,
    *,
    wait_timeout: float = 5,
    policy: RetryPolicy | None = None,
) -> Backend:
    """A backend on the fake EHR; without `policy`, nothing is retried (but the one re-login)."""

    async def no_sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    return Backend(
        name=system.name,
        endpoint=system.endpoint,
        transport=transport,
        pool=SessionPool(
            max_size=system.max_sessions,
            idle_timeout=system.idle_timeout,
            wait_timeout=wait_timeout,
        ),
        style=system.session,
        fault_code_path=system.fault_code_path,
        timeout=1.0,
        policy=policy or RetryPolicy(retries=0),
        sleep=no_sleep,
    )


def read_template(system: CompiledSystem) -> EnvelopeTemplate:
    read = system.resources["Patient"].read
    assert read is not None
    return read.call.template


def test_backend_logs_in_lazily_once_for_many_calls(system: CompiledSystem, ehr: FakeEhr) -> None:
    backend = make_backend(system, ehr)
    template = read_template(system)

    async def work(session: Session) -> str | None:
        first = await backend.call(session, template, {"MRN": "100001"})
        await backend.call(session, template, {"MRN": "100002"})
        return first.findtext(f"{{{TNS}}}Patient/{{{TNS}}}MRN")

    async def main() -> list[str | None]:
        assert ehr.requests == []  # nothing happens before the first interaction
        return [await backend.run(work) for _ in range(10)]

    assert asyncio.run(main()) == ["100001"] * 10
    assert len(ehr.sent("Login")) == 1
    assert len(ehr.sent("GetPatient")) == 20
    assert {session_id(r) for r in ehr.sent("GetPatient")} == {"TOKEN-1"}
    assert backend.stats.logins == 1
    assert backend.stats.relogins == 0
    assert backend.stats.calls == 21


def test_backend_login_carries_the_configured_credentials(
    system: CompiledSystem, ehr: FakeEhr
) -> None:
    backend = make_backend(system, ehr)
    template = read_template(system)

    async def work(session: Session) -> None:
        await backend.call(session, template, {"MRN": "1"})

    asyncio.run(backend.run(work))

    login = ehr.sent("Login")[0]
    body = etree.fromstring(login.body).find(f"{{{SOAP_ENV}}}Body/{{{TNS}}}Login")
    assert body is not None
    assert body.findtext(f"{{{TNS}}}Username") == "bridge"
    assert body.findtext(f"{{{TNS}}}Password") == "bridge-dev-password"
    assert login.headers["SOAPAction"] == '"Login"'
    assert login.url == system.endpoint
    assert session_id(login) is None  # the login itself carries no session header


def test_backend_concurrent_interactions_never_log_in_more_than_the_pool_allows(
    system: CompiledSystem, ehr: FakeEhr
) -> None:
    backend = make_backend(system, ehr)
    template = read_template(system)

    async def work(session: Session) -> None:
        await backend.call(session, template, {"MRN": "1"})
        await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(backend.run(work) for _ in range(30)))

    asyncio.run(main())
    assert 1 <= len(ehr.sent("Login")) <= system.max_sessions
    assert len(ehr.sent("GetPatient")) == 30


def test_backend_session_expired_relogs_in_and_retries_the_whole_work_once(
    system: CompiledSystem, ehr: FakeEhr
) -> None:
    backend = make_backend(system, ehr)
    template = read_template(system)
    # The second call of the first attempt finds the session expired.
    ehr.script["GetPatient"] = [
        ok("get_patient_response.xml"),
        fault("fault_session_expired.xml"),
    ]
    attempts = 0

    async def work(session: Session) -> str:
        nonlocal attempts
        attempts += 1
        await backend.call(session, template, {"MRN": "100001"})
        await backend.call(session, template, {"MRN": "100001"})
        return "done"

    assert asyncio.run(backend.run(work)) == "done"
    assert attempts == 2
    assert len(ehr.sent("Login")) == 2
    calls = ehr.sent("GetPatient")
    assert [session_id(r) for r in calls] == ["TOKEN-1", "TOKEN-1", "TOKEN-2", "TOKEN-2"]
    assert backend.stats.relogins == 1
    assert backend.stats.logins == 2


def test_backend_second_consecutive_expiry_propagates(system: CompiledSystem, ehr: FakeEhr) -> None:
    backend = make_backend(system, ehr)
    template = read_template(system)
    ehr.script["GetPatient"] = [
        fault("fault_session_expired.xml"),
        fault("fault_session_expired.xml"),
    ]
    attempts = 0

    async def work(session: Session) -> None:
        nonlocal attempts
        attempts += 1
        await backend.call(session, template, {"MRN": "100001"})

    with pytest.raises(SoapFault) as info:
        asyncio.run(backend.run(work))

    assert info.value.vendor_code == "EHR-SESSION-EXPIRED"
    assert attempts == 2
    assert len(ehr.sent("Login")) == 2
    assert len(ehr.sent("GetPatient")) == 2
    assert backend.pool.in_use == 0


def test_backend_other_faults_are_not_retried(system: CompiledSystem, ehr: FakeEhr) -> None:
    backend = make_backend(system, ehr)
    template = read_template(system)
    ehr.script["GetPatient"] = [fault("fault_pat_404.xml")]
    attempts = 0

    async def work(session: Session) -> None:
        nonlocal attempts
        attempts += 1
        await backend.call(session, template, {"MRN": "100042"})

    with pytest.raises(SoapFault) as info:
        asyncio.run(backend.run(work))

    assert info.value.vendor_code == "EHR-PAT-404"
    assert attempts == 1
    assert len(ehr.sent("Login")) == 1
    assert backend.stats.relogins == 0


def test_backend_login_refused_for_session_limit(system: CompiledSystem, ehr: FakeEhr) -> None:
    backend = make_backend(system, ehr)
    template = read_template(system)
    ehr.script["Login"] = [fault("fault_session_limit.xml")]

    async def work(session: Session) -> None:
        await backend.call(session, template, {"MRN": "1"})

    with pytest.raises(SessionLimitReached) as info:
        asyncio.run(backend.run(work))

    assert info.value.status == 503
    assert info.value.code == "transient"
    assert info.value.headers["Retry-After"] == "2"
    assert ehr.sent("GetPatient") == []
    assert backend.pool.in_use == 0


@pytest.mark.parametrize("token", [b"", b"  ", b"\n    "])
def test_backend_login_answer_without_token_is_backend_error(
    system: CompiledSystem, ehr: FakeEhr, token: bytes
) -> None:
    backend = make_backend(system, ehr)
    template = read_template(system)
    ehr.script["Login"] = [
        SoapResponse(200, fixture("login_response.xml").replace(b"SESSION-TOKEN", token))
    ]

    async def work(session: Session) -> None:
        await backend.call(session, template, {"MRN": "1"})

    with pytest.raises(BackendError):
        asyncio.run(backend.run(work))
    assert ehr.sent("GetPatient") == []


@pytest.mark.parametrize(
    "body",
    [
        b"<html><head><title>503 Service Unavailable</title></head>"
        b"<body><h1>Service Unavailable</h1></body></html>",
        b"<!DOCTYPE html>\n<html><body>Service Unavailable<br></body></html>",
        b"Service Unavailable",
        b"",
    ],
)
def test_backend_http_503_with_a_non_soap_body_is_backend_unavailable(
    system: CompiledSystem, ehr: FakeEhr, body: bytes
) -> None:
    backend = make_backend(system, ehr)
    template = read_template(system)
    ehr.script["GetPatient"] = [SoapResponse(503, body, "text/html")]

    async def work(session: Session) -> None:
        await backend.call(session, template, {"MRN": "1"})

    with pytest.raises(BackendUnavailable) as info:
        asyncio.run(backend.run(work))

    assert info.value.status == 503
    assert info.value.headers["Retry-After"] == "5"


def test_backend_http_404_is_backend_error(system: CompiledSystem, ehr: FakeEhr) -> None:
    backend = make_backend(system, ehr)
    template = read_template(system)
    ehr.script["GetPatient"] = [SoapResponse(404, b"<html>Not Found</html>", "text/html")]

    async def work(session: Session) -> None:
        await backend.call(session, template, {"MRN": "1"})

    with pytest.raises(BackendError) as info:
        asyncio.run(backend.run(work))

    assert type(info.value) is BackendError
    assert info.value.diagnostics == "The legacy system answered HTTP 404."


def test_backend_render_redacts_the_token(system: CompiledSystem, ehr: FakeEhr) -> None:
    backend = make_backend(system, ehr)

    shown = backend.render(read_template(system), {"MRN": "100001"})

    assert session_id(SoapRequest("", shown, {}, "GetPatient", 1)) == "***"


def test_backend_close_logs_out_every_idle_logged_in_session(
    system: CompiledSystem, ehr: FakeEhr
) -> None:
    backend = make_backend(system, ehr)
    template = read_template(system)

    async def main() -> None:
        gate = asyncio.Event()
        inside = 0

        async def work(session: Session) -> None:
            nonlocal inside
            await backend.call(session, template, {"MRN": "1"})
            inside += 1
            if inside == 3:
                gate.set()
            await gate.wait()  # three sessions are busy at the same time

        await asyncio.gather(*(backend.run(work) for _ in range(3)))
        assert backend.pool.size == 3
        await backend.close()

    asyncio.run(main())

    issued = {session_id(r) for r in ehr.sent("GetPatient")}
    logged_out = [session_id(r) for r in ehr.sent("Logout")]
    assert issued == {"TOKEN-1", "TOKEN-2", "TOKEN-3"}
    assert sorted(logged_out) == ["TOKEN-1", "TOKEN-2", "TOKEN-3"]  # type: ignore[type-var]
    assert all(r.headers["SOAPAction"] == '"Logout"' for r in ehr.sent("Logout"))
    assert backend.stats.logouts == 3
    assert ehr.closed


def test_backend_close_skips_sessions_that_never_logged_in(
    system: CompiledSystem, ehr: FakeEhr
) -> None:
    backend = make_backend(system, ehr)

    async def main() -> None:
        async with backend.pool.lease():
            pass  # leased and returned without a call: never logged in
        await backend.close()

    asyncio.run(main())

    assert ehr.sent("Logout") == []
    assert ehr.closed


def test_backend_close_goes_on_when_a_logout_fails(system: CompiledSystem, ehr: FakeEhr) -> None:
    backend = make_backend(system, ehr)
    template = read_template(system)
    ehr.script["Logout"] = [SoapResponse(503, b"down")]

    async def main() -> None:
        gate = asyncio.Event()
        inside = 0

        async def work(session: Session) -> None:
            nonlocal inside
            await backend.call(session, template, {"MRN": "1"})
            inside += 1
            if inside == 2:
                gate.set()
            await gate.wait()

        await asyncio.gather(*(backend.run(work) for _ in range(2)))
        await backend.close()

    asyncio.run(main())

    assert len(ehr.sent("Logout")) == 2
    assert backend.stats.logouts == 1
    assert ehr.closed


class _Budget:
    """A session budget in memory: slots taken and given back, with when."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.held: set[int] = set()
        self.returned: list[int] = []

    async def acquire(self, system: str, cap: int) -> int | None:
        free = [s for s in range(self.cap) if s not in self.held]
        if not free:
            return None
        self.held.add(free[0])
        return free[0]

    async def release(self, system: str, slot: int) -> None:
        self.held.discard(slot)
        self.returned.append(slot)

    async def want(self, system: str) -> None:
        pass

    async def unwant(self, system: str) -> None:
        pass

    async def surplus(self, system: str, cap: int) -> int:
        return 0


@pytest.mark.parametrize(
    ("logout", "kept"),
    [
        (ok("logout_response.xml"), False),  # the session ended: its slot is free at once
        (SoapResponse(500, b"<html>proxy error</html>"), True),  # still open in the EHR
    ],
)
def test_a_session_slot_is_kept_while_the_legacy_system_may_hold_the_session(
    system: CompiledSystem, ehr: FakeEhr, logout: SoapResponse, kept: bool
) -> None:
    async def run() -> tuple[set[int], list[int]]:
        backend = make_backend(system, ehr)
        budget = _Budget(system.max_sessions)
        backend.budget = budget
        template = read_template(system)
        async with backend.pool.lease() as session:
            session.deadline = backend.deadline()
            await backend.call(session, template, {"MRN": "100001"})
            assert session.slot == 0 and budget.held == {0}
        ehr.script["Logout"] = [logout]
        (idle,) = backend.pool.evict_idle(1)
        await backend._logout(idle)
        await asyncio.sleep(0.01)  # give-backs run as tasks
        return set(budget.held), list(budget.returned)

    held, returned = asyncio.run(run())
    if kept:
        # Given back only after the legacy idle timeout, by when the EHR has dropped it.
        assert held == {0} and returned == []
    else:
        assert held == set() and returned == [0]


def test_sessions_owed_to_the_budget_leave_the_pool_as_they_are_released(
    system: CompiledSystem, ehr: FakeEhr
) -> None:
    """Another process waits for a slot while every session here is busy (steady
    load): none is idle when the sweep looks, so the owed ones go as they come back."""
    cap = system.max_sessions
    budget = _Budget(cap)

    async def main() -> tuple[int, int, int]:
        backend = make_backend(system, ehr)
        backend.budget = budget
        template = read_template(system)
        all_busy, done = asyncio.Event(), asyncio.Event()
        inside = 0

        async def work(session: Session) -> None:
            nonlocal inside
            await backend.call(session, template, {"MRN": "1"})
            inside += 1
            if inside == cap:
                all_busy.set()
            await done.wait()

        busy = [asyncio.create_task(backend.run(work)) for _ in range(cap)]
        await all_busy.wait()
        assert backend.pool.evict_idle(2) == []  # what the sweep alone could do
        backend.pool.owe(2)
        done.set()
        await asyncio.gather(*busy)
        await asyncio.sleep(0.01)  # the logouts run as tasks
        # The slots given back are not taken again by new sessions of this process.
        await asyncio.gather(*(backend.run(work) for _ in range(cap)))
        kept = backend.pool.logged_in
        await backend.close()
        return kept, len(budget.returned), backend.pool.owed

    kept, returned, owed = asyncio.run(main())

    assert kept == cap - 2
    assert returned >= 2 and owed == 0
    assert len(ehr.sent("Login")) == cap  # no session logged in again in their place
