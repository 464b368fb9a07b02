"""Session, cursor and fault logic of the EHR state, in-process with a fake clock."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from bridge.mock.ehr_state import EhrState, SearchCriteria
from bridge.mock.options import MockOptions as EhrOptions
from bridge.mock.state import VendorError
from bridge.mock.world import World, build_world

USER, PASSWORD = "bridge", "bridge-dev-password"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


OPTIONS = EhrOptions(
    patients=300, page_size=10, max_sessions=3, session_idle_timeout=60, today=dt.date(2026, 11, 24)
)


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(OPTIONS.seed, OPTIONS.patients, dt.date(2026, 11, 24))


@pytest.fixture
def ehr(clock: FakeClock, world: World) -> EhrState:
    return EhrState(OPTIONS, world, clock=clock)


def _code(call) -> str:
    with pytest.raises(VendorError) as info:
        call()
    return info.value.code


def test_options_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="page_size must be >= 1, got 0"):
        EhrOptions(page_size=0)


def test_session_idle_expiry_is_lazy_and_reported_as_expired(ehr, clock) -> None:
    sid = ehr.login(USER, PASSWORD)
    clock.now += 59
    ehr.get_patient(sid, "100001")  # touches the session
    clock.now += 59
    ehr.get_patient(sid, "100001")
    clock.now += 60
    assert _code(lambda: ehr.get_patient(sid, "100001")) == "EHR-SESSION-EXPIRED"
    # Once known as expired it stays expired, not invalid.
    assert _code(lambda: ehr.get_patient(sid, "100001")) == "EHR-SESSION-EXPIRED"


def test_session_limit_counts_only_live_sessions(ehr, clock) -> None:
    for _ in range(3):
        ehr.login(USER, PASSWORD)
    assert _code(lambda: ehr.login(USER, PASSWORD)) == "EHR-SESSION-LIMIT"
    clock.now += 61
    ehr.login(USER, PASSWORD)
    assert ehr.active_sessions() == 1


def test_login_failures_are_counted(ehr) -> None:
    assert _code(lambda: ehr.login(USER, "x")) == "EHR-AUTH-FAILED"
    assert _code(lambda: ehr.login(None, None)) == "EHR-AUTH-FAILED"
    assert ehr.stats()["login_failures"] == 2


def test_logout_of_expired_session_is_not_a_logout(ehr, clock) -> None:
    sid = ehr.login(USER, PASSWORD)
    clock.now += 61
    ehr.logout(sid)
    ehr.logout("unknown")
    assert ehr.stats()["logouts"] == 0


def test_find_patients_pages_and_cursor_lifecycle(ehr) -> None:
    sid = ehr.login(USER, PASSWORD)
    page = ehr.find_patients(sid, SearchCriteria())
    assert page.total == 300
    assert len(page.records) == 10
    seen = list(page.records)
    while page.cursor_id:
        cursor = page.cursor_id
        page = ehr.fetch_next(sid, cursor)
        seen += page.records
    assert len(seen) == 300
    assert _code(lambda: ehr.fetch_next(sid, cursor)) == "EHR-CURSOR-INVALID"


def test_find_patients_small_result_has_no_cursor(ehr) -> None:
    sid = ehr.login(USER, PASSWORD)
    page = ehr.find_patients(sid, SearchCriteria(mrn="100005"))
    assert [r.mrn for r in page.records] == ["100005"]
    assert page.cursor_id is None


@pytest.mark.parametrize("dob", ["1/2/1980", "02/30/1980", "1980-01-02", "13/01/1980"])
def test_find_patients_malformed_dob_is_bad_request(ehr, dob: str) -> None:
    sid = ehr.login(USER, PASSWORD)
    assert _code(lambda: ehr.find_patients(sid, SearchCriteria(dob=dob))) == "EHR-BAD-REQUEST"


def test_expire_sessions_kills_cursors_too(ehr) -> None:
    sid = ehr.login(USER, PASSWORD)
    cursor = ehr.find_patients(sid, SearchCriteria()).cursor_id
    assert ehr.expire_sessions() == 1
    other = ehr.login(USER, PASSWORD)
    assert _code(lambda: ehr.fetch_next(other, cursor)) == "EHR-CURSOR-INVALID"


def test_fault_rate_injects_internal_faults_except_on_login(ehr) -> None:
    ehr.set_faults(fault_rate=1.0)
    ehr.begin_call("Login", injectable=False)
    with pytest.raises(VendorError) as info:
        ehr.begin_call("GetPatient")
    assert (info.value.code, info.value.server) == ("EHR-INTERNAL", True)
    assert ehr.stats()["calls"] == {"GetPatient": 1, "Login": 1}


def test_refuse_window_follows_the_clock(ehr, clock) -> None:
    ehr.set_faults(refuse_seconds=5)
    assert ehr.refusing()
    assert ehr.faults()["refuse_seconds"] == 5
    clock.now += 5
    assert not ehr.refusing()


def test_concurrent_logins_never_exceed_the_limit() -> None:
    ehr = EhrState(EhrOptions(patients=10, max_sessions=5))
    outcomes: list[str] = []

    def login() -> None:
        try:
            ehr.login(USER, PASSWORD)
            outcomes.append("ok")
        except VendorError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=login) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 5
    assert ehr.active_sessions() == 5
