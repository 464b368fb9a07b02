"""The soak test's judge, on made-up runs: it must catch what it claims to catch."""

from __future__ import annotations

from typing import Any

from tests.reliability.load import Call, Reading, Write
from tests.reliability.reconcile import Run, SoakReport, Window, reconcile

TAG = "SOAKTEST"
MRN = "100101"


def _write(wid: str, outcome: str, *devices: str, status: int | None = 201) -> Write:
    readings = [Reading(f"{TAG}-{d}", "HR", 60, "2026-11-20T00:00:01Z") for d in devices]
    return Write(wid, "create", MRN, readings, 0, sent=1.0, outcome=outcome, status=status)


def _row(device: str) -> dict[str, Any]:
    return {"DeviceId": f"{TAG}-{device}", "TypeCode": "HR", "Value": "60"}


def _run(rows: list[dict[str, Any]], **changes: Any) -> Run:
    stats = {"ehr": {"peak_sessions": 4, "faults": {}, "refused": 3}}
    run = Run(
        settings={},
        events=[],
        outages=[Window("outage", "ehr", 10.0, 20.0)],
        kill_at=30.0,
        ready_again_at=32.0,
        session_hold=6.0,
        session_cap=4,
        breaker_samples={0: [(9.0, {"hospital": "closed"}), (40.0, {"hospital": "closed"})]},
        stats_samples=[],
        final_stats=stats,
        vitals={MRN: [_row("0"), *rows]},  # w0 of _judge's writes
        run_tag=TAG,
        gateway_log_errors=[],
    )
    for key, value in changes.items():
        setattr(run, key, value)
    return run


def _judge(calls: list[Call], writes: list[Write], run: Run) -> SoakReport:
    # Every run has one acknowledged write that was applied: a run with none fails coverage.
    return reconcile(calls, [_write("w0", "acknowledged", "0"), *writes], run)


def _failed(calls: list[Call], writes: list[Write], run: Run) -> set[str]:
    return {c.name for c in _judge(calls, writes, run).failures()}


OK_CALLS = [
    Call(kind, 0.0, 0.1, 202 if kind == "async-status" else 201 if "create" in kind else 200)
    for kind in (
        "patient-read",
        "patient-search",
        "patient-next",
        "lab-search",
        "lab-next",
        "create",
        "transaction",
        "async-create",
    )
]


def test_a_clean_run_passes() -> None:
    writes = [_write("w1", "acknowledged", "1"), _write("w2", "refused", "2", status=502)]
    assert _failed(OK_CALLS, writes, _run([_row("1")])) == set()


def test_lost_doubled_and_refused_but_applied_writes_fail() -> None:
    writes = [
        _write("w1", "acknowledged", "1"),
        _write("w2", "acknowledged", "2"),
        _write("w3", "refused", "3", status=503),
    ]
    rows = [_row("2"), _row("2"), _row("3")]
    assert _failed(OK_CALLS, writes, _run(rows)) == {
        "acknowledged writes are in the EHR exactly once",
        "no write is applied twice",
        "writes the apps were told failed are not applied",
    }


def test_unknown_writes_may_be_applied_once() -> None:
    writes = [_write("w1", "unknown", "1", status=None), _write("w2", "unknown", "2")]
    report = _judge(OK_CALLS, writes, _run([_row("1")]))
    assert report.ok
    assert report.writes["all"]["unknown, applied"] == 1
    assert report.writes["all"]["unknown, not applied"] == 1


def test_a_500_fails_and_a_503_needs_a_cause() -> None:
    calls = [
        *OK_CALLS,
        Call("patient-read", 12.0, 12.1, 503),  # the outage
        Call("lab-search", 12.0, 12.1, 503),  # the lab was not down
        Call("create", 35.0, 35.1, 503),  # just after the restart
        Call("patient-read", 50.0, 50.1, 500),
    ]
    report = _judge(calls, [], _run([]))
    assert {c.name for c in report.failures()} == {
        "no 500 at any time",
        "503/504 only while a system is down, its breaker open, or just after the restart",
    }
    assert report.allowed_5xx == {"outage": 1, "restart": 1}


def test_a_breaker_open_without_an_outage_fails() -> None:
    samples = [
        (60.0, {"hospital": "closed"}),
        (60.5, {"hospital": "open"}),
        (61.0, {"hospital": "closed"}),
    ]
    calls = [*OK_CALLS, Call("patient-read", 60.4, 60.6, 503)]
    assert _failed(calls, [], _run([], breaker_samples={0: samples})) == {
        "breakers opened only during an outage or the restart"
    }


def test_session_limit_refusals_count_only_after_the_kill() -> None:
    def stats(n: int) -> dict[str, Any]:
        return {"ehr": {"peak_sessions": 4, "faults": {"EHR-SESSION-LIMIT": n}, "refused": 1}}

    after_kill = [(29.0, stats(0)), (33.0, stats(2))]
    assert _failed(OK_CALLS, [], _run([], stats_samples=after_kill, final_stats=stats(2))) == set()
    before = [(5.0, stats(0)), (6.0, stats(1))]
    assert _failed(OK_CALLS, [], _run([], stats_samples=before, final_stats=stats(1))) == {
        "session-limit refusals only from sessions the killed process left behind"
    }


def test_asynchronous_writes_applied_out_of_order_fail() -> None:
    first, second = _write("w1", "acknowledged", "1"), _write("w2", "acknowledged", "2")
    first.sent, first.accepted_at = 1.0, 1.5
    second.sent, second.accepted_at = 2.0, 2.5  # sent after the first was accepted
    in_order = [{**_row("1"), "ReadingId": "VS00000010"}, {**_row("2"), "ReadingId": "VS00000011"}]
    assert _failed(OK_CALLS, [first, second], _run(in_order)) == set()
    swapped = [{**_row("1"), "ReadingId": "VS00000012"}, {**_row("2"), "ReadingId": "VS00000011"}]
    assert _failed(OK_CALLS, [first, second], _run(swapped)) == {
        "asynchronous writes to one patient are applied in the order accepted"
    }


def test_a_breaker_excuses_only_its_own_replicas_503s() -> None:
    # The outage (10-20 s) opened replica 1's breaker; replica 0's stayed closed.
    samples = {
        0: [(9.0, {"hospital": "closed"}), (25.0, {"hospital": "closed"})],
        1: [(9.0, {"hospital": "closed"}), (11.0, {"hospital": "open"}), (25.0, {})],
    }
    calls = [
        *OK_CALLS,
        Call("patient-read", 22.0, 22.1, 503, replica=1),  # its breaker still open
        Call("patient-read", 22.0, 22.1, 503, replica=0),  # no cause
    ]
    report = _judge(calls, [], _run([], breaker_samples=samples))
    assert {c.name for c in report.failures()} == {
        "503/504 only while a system is down, its breaker open, or just after the restart"
    }
    assert report.allowed_5xx == {"breaker": 1}


def test_several_replicas_are_reported_each_and_must_all_serve() -> None:
    calls = [*OK_CALLS, Call("patient-read", 1.0, 1.1, 200, replica=1)]
    calls[4] = Call("lab-next", 0.0, 0.1, 200, replica=1)  # a link replica 0 wrote
    async_write = _write("w1", "acknowledged", "1")
    async_write.kind, async_write.replica, async_write.outcome_replica = "async-create", 1, 0
    logins = {"replica 0": {"ehr": 3, "lab": 1}, "replica 1": {"ehr": 2}}
    run = _run([_row("1")], replicas=2, replica_logins=logins)
    report = _judge(calls, [async_write], run)
    assert report.ok, report.text()
    assert report.by_replica["replica 1"]["writes"] == 1
    assert report.by_replica["replica 1"]["async outcome read elsewhere"] == 1
    assert report.by_replica["replica 1"]["next pages 2xx"] == 1
    assert report.by_replica["all"]["requests"] == len(calls)
    assert report.by_replica["replica 1"]["ehr logins"] == 2
    assert report.by_replica["all"]["ehr logins"] == 5
    # A replica that answered nothing, and no outcome read elsewhere, fail the coverage.
    only_zero = [c for c in calls if c.replica == 0]
    run = _run([], replicas=2)
    assert _failed(only_zero, [], run) == {"the run exercised every kind and every fault"}
    coverage = _judge(only_zero, [], run).checks[-1]
    assert coverage.evidence == [
        "no lab-next succeeded",
        "replica 1 answered no request with 200",
        "no asynchronous outcome was read on another replica",
    ]
