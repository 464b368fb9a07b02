"""After the soak: what the apps were told against what the legacy systems hold.

`reconcile(...)` takes the run's record (every answer with its time, every
write with its fingerprints, the fault timeline, samples of the gateway's
breakers and of the mock's counters, and the EHR's vitals read through the
side door) and returns a `SoakReport`: the figures, and one `Check` per
promise of issue #6, each passed or failed with the evidence.

Why a 503 (or 504) may be allowed, each tied to a cause the run itself
caused and recorded, never to how fast anything was:

* `outage`: the request overlapped the window in which its legacy system
  refused every call (`refuse_seconds`), plus one second for a request
  already on its way when the window closed;
* `breaker`: the circuit breaker for that system of the replica the request
  went to was sampled not closed (its `/readyz`) between the sample before
  and the sample after the request; a breaker window is itself only allowed to begin during an
  outage or the restart window (else the check "breakers opened only for a
  cause" fails);
* `restart`: from the SIGKILL until `session_hold` (plus three seconds)
  after the new process answered: the killed process's legacy sessions stay
  open until the legacy system's idle timeout frees them, and its slots of
  the gateway's global session budget until their lease runs out (the soak
  sets that ttl to the idle timeout); until then the cap refuses new
  sessions. With several replicas the window holds for every one of them:
  the survivors share the slots the killed one left taken.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.reliability.load import Call, Write

__all__ = ["Check", "Run", "SoakReport", "Window", "reconcile"]

# The gateway's system names for the mock's.
GATEWAY_NAME = {"ehr": "hospital", "lab": "lab", "pharmacy": "pharmacy"}
# The vendor codes a legacy system answers a login with when its session cap is reached.
LIMIT_CODES = {"ehr": "EHR-SESSION-LIMIT", "lab": "LAB-SESSION-LIMIT", "pharmacy": "RX-LIMIT"}
OUTAGE_SLACK = 1.0
RESTART_SLACK = 3.0


@dataclass
class Window:
    reason: str  # outage | breaker | restart
    system: str  # a mock system name, or "*" for every one
    start: float
    end: float
    seen: float | None = None  # breakers: the first sample that saw it not closed
    replica: int | None = None  # breakers: whose; None: every replica

    def overlaps(self, start: float, end: float) -> bool:
        return start <= self.end and end >= self.start


@dataclass
class Check:
    name: str
    ok: bool
    figure: str
    evidence: list[str] = field(default_factory=list)


@dataclass
class Run:
    """What happened during the run, besides the apps' own records."""

    settings: dict[str, Any]
    events: list[tuple[float, str]]  # the fault timeline
    outages: list[Window]
    kill_at: float | None
    ready_again_at: float | None
    session_hold: float  # how long a dead process's sessions (and slots) stay taken
    session_cap: int
    # Each replica's breaker states from its /readyz; None: that replica was down.
    breaker_samples: dict[int, list[tuple[float, dict[str, str] | None]]]
    stats_samples: list[tuple[float, dict[str, Any]]]
    final_stats: dict[str, Any]
    vitals: dict[str, list[dict[str, Any]]]  # by MRN, from /_mock/ehr/vitals
    run_tag: str
    gateway_log_errors: list[str]
    replicas: int = 1
    killed_replica: int = 0
    # Each replica's legacy logins per (mock) system, from its /metrics.
    replica_logins: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class SoakReport:
    settings: dict[str, Any]
    requests: dict[str, dict[str, int]]
    latency_ms: dict[str, dict[str, float]]
    writes: dict[str, dict[str, int]]
    windows: list[dict[str, Any]]
    allowed_5xx: dict[str, int]
    refusals: dict[str, int]  # why writes were refused: "kind status diagnostics"
    sessions: dict[str, dict[str, int]]
    events: list[tuple[float, str]]
    checks: list[Check]
    gateway_log_errors: list[str]
    # With several replicas: requests, writes and legacy logins per replica, and in total.
    by_replica: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def text(self) -> str:
        from tests.reliability.table import render

        return render(self)


def reconcile(calls: list[Call], writes: list[Write], run: Run) -> SoakReport:
    windows = _windows(run)
    checks: list[Check] = []
    writes_table = _reconcile_writes(writes, run, checks)
    checks.append(_no_500(calls))
    allowed, check = _unavailable_in_windows(calls, windows)
    checks.append(check)
    checks.append(_unexpected_answers(calls, writes))
    checks.append(_breakers_have_causes(windows))
    sessions = _sessions(run, windows, checks)
    checks.append(_coverage(calls, writes, run))
    return SoakReport(
        settings=run.settings,
        requests=_requests(calls),
        latency_ms=_latency(calls),
        writes=writes_table,
        windows=[asdict(w) for w in windows],
        allowed_5xx=allowed,
        refusals=_refusals(writes),
        sessions=sessions,
        events=run.events,
        checks=checks,
        gateway_log_errors=run.gateway_log_errors,
        by_replica=_by_replica(calls, writes, run) if run.replicas > 1 else {},
    )


# -- windows ------------------------------------------------------------------------


def _windows(run: Run) -> list[Window]:
    windows = [Window("outage", w.system, w.start, w.end + OUTAGE_SLACK) for w in run.outages]
    if run.kill_at is not None:
        ready = run.ready_again_at if run.ready_again_at is not None else float("inf")
        end = ready + run.session_hold + RESTART_SLACK
        windows.append(Window("restart", "*", run.kill_at, end))
    # Breakers, each replica's own: from the last sample that saw the breaker closed
    # to the first that saw it closed again (the state changed somewhere in between).
    for replica, samples in sorted(run.breaker_samples.items()):
        for system, name in GATEWAY_NAME.items():
            last_closed = 0.0
            opened: tuple[float, float] | None = None  # (last closed sample, first open one)
            for at, states in samples:
                if states is None:
                    continue  # the replica was down: its breakers died with it
                state = states.get(name, "closed")
                if state != "closed" and opened is None:
                    opened = (last_closed, at)
                elif state == "closed":
                    if opened is not None:
                        windows.append(Window("breaker", system, opened[0], at, opened[1], replica))
                        opened = None
                    last_closed = at
            if opened is not None:
                windows.append(
                    Window("breaker", system, opened[0], float("inf"), opened[1], replica)
                )
    return sorted(windows, key=lambda w: w.start)


def _cause(call: Call, windows: list[Window]) -> str | None:
    for reason in ("outage", "breaker", "restart"):
        for w in windows:
            if (
                w.reason == reason
                and w.system in (call.system, "*")
                and w.replica in (call.replica, None)
                and w.overlaps(call.start, call.end)
            ):
                return reason
    return None


# -- checks -------------------------------------------------------------------------


def _reconcile_writes(
    writes: list[Write], run: Run, checks: list[Check]
) -> dict[str, dict[str, int]]:
    found: Counter[str] = Counter()
    stored_as: dict[str, str] = {}  # device id -> ReadingId (the EHR numbers in order)
    mismatched: list[str] = []
    sent = {r.device: (w, r) for w in writes for r in w.readings}
    phantoms = []
    for mrn, rows in run.vitals.items():
        for row in rows:
            device = row.get("DeviceId") or ""
            if not device.startswith(run.run_tag):
                continue
            found[device] += 1
            stored_as[device] = str(row.get("ReadingId", ""))
            if device not in sent:
                phantoms.append(device)
                continue
            write, reading = sent[device]
            if (
                write.mrn != mrn
                or row.get("TypeCode") != reading.type_code
                or row.get("Value") != str(reading.value)
            ):
                mismatched.append(f"{write.wid} {device}")

    table: dict[str, dict[str, int]] = defaultdict(Counter)
    lost, doubled, applied_refused, torn = [], [], [], []
    for w in writes:
        counts = [found[r.device] for r in w.readings]
        applied = sum(1 for c in counts if c)
        row = table[w.kind]
        row["sent"] += 1
        row[w.outcome] += 1
        if any(c > 1 for c in counts):
            doubled.append(_describe(w, counts))
            row["duplicated"] += 1
        if w.outcome == "acknowledged":
            if all(c == 1 for c in counts):
                row["found once"] += 1
            elif applied < len(counts):
                lost.append(_describe(w, counts))
                row["missing"] += 1
        elif w.outcome == "refused" and applied:
            applied_refused.append(_describe(w, counts))
            row["refused but applied"] += 1
        elif w.outcome == "unknown":
            row["unknown, applied" if applied else "unknown, not applied"] += 1
        if 0 < applied < len(counts):
            torn.append(_describe(w, counts))
    total = Counter[str]()
    for row in table.values():
        total.update(row)
    table["all"] = total
    acked = total["acknowledged"]
    checks.append(
        Check(
            "acknowledged writes are in the EHR exactly once",
            not lost and not mismatched and acked == total["found once"],
            f"{total['found once']}/{acked} found once, {len(lost)} missing, "
            f"{len(mismatched)} altered",
            lost[:10] + mismatched[:10],
        )
    )
    checks.append(
        Check(
            "no write is applied twice",
            not doubled and not phantoms,
            f"{len(doubled)} duplicated, {len(phantoms)} readings nobody sent",
            doubled[:10] + phantoms[:10],
        )
    )
    checks.append(
        Check(
            "writes the apps were told failed are not applied",
            not applied_refused,
            f"{total['refused']} refused, {len(applied_refused)} of them applied",
            applied_refused[:10],
        )
    )
    checks.append(
        Check(
            "transactions are all or nothing",
            not torn,
            f"{len(torn)} partly applied",
            torn[:10],
        )
    )
    checks.append(_async_order(writes, stored_as))
    return {kind: dict(row) for kind, row in table.items()}


def _async_order(writes: list[Write], stored_as: dict[str, str]) -> Check:
    """Asynchronous writes to one patient are applied in the order they were accepted.

    Only pairs whose order the app itself saw are judged: the second was sent
    after the first's 202 came back."""
    by_patient: dict[str, list[Write]] = defaultdict(list)
    for w in writes:
        if w.accepted_at is not None and w.readings[0].device in stored_as:
            by_patient[w.mrn].append(w)
    pairs, wrong = 0, []
    for lane in by_patient.values():
        lane.sort(key=lambda w: w.sent)
        for i, first in enumerate(lane):
            assert first.accepted_at is not None
            for second in lane[i + 1 :]:
                if second.sent <= first.accepted_at:
                    continue
                pairs += 1
                a, b = (stored_as[w.readings[0].device] for w in (first, second))
                if a > b:
                    wrong.append(
                        f"{second.wid} (sent {second.sent:.2f}s) stored as {b}, before "
                        f"{first.wid} (accepted {first.accepted_at:.2f}s) stored as {a}"
                    )
    return Check(
        "asynchronous writes to one patient are applied in the order accepted",
        not wrong,
        f"{pairs} ordered pairs, {len(wrong)} out of order",
        wrong[:10],
    )


def _describe(w: Write, counts: list[int]) -> str:
    answer = "no answer" if w.status is None else str(w.status)
    return (
        f"{w.wid} {w.kind} sent at {w.sent:.2f}s, answer {answer} ({w.outcome}"
        f"{', ' + w.detail if w.detail else ''}); copies in the EHR per reading: {counts}"
    )


def _refusals(writes: list[Write]) -> dict[str, int]:
    reasons: Counter[str] = Counter()
    for w in writes:
        if w.outcome == "refused":
            # "The transaction failed at entry[0], entry[1]: <why>": the why is enough.
            why = w.detail.split(": ", 1)[-1] if "failed at entry" in w.detail else w.detail
            answer = "no connection" if w.status is None else str(w.status)
            reasons[f"{w.kind} {answer} {why}".strip()] += 1
    return dict(reasons.most_common())


def _no_500(calls: list[Call]) -> Check:
    bad = [c for c in calls if c.status == 500]
    return Check(
        "no 500 at any time",
        not bad,
        f"{len(bad)} answers 500",
        [f"{c.kind} at {c.start:.2f}s: {c.detail}" for c in bad[:10]],
    )


def _unavailable_in_windows(
    calls: list[Call], windows: list[Window]
) -> tuple[dict[str, int], Check]:
    allowed: Counter[str] = Counter()
    outside = []
    for c in calls:
        if c.status not in (503, 504):
            continue
        cause = _cause(c, windows)
        if cause is None:
            outside.append(c)
        else:
            allowed[cause] += 1
    total = sum(allowed.values()) + len(outside)
    return dict(allowed), Check(
        "503/504 only while a system is down, its breaker open, or just after the restart",
        not outside,
        f"{total} answers 503/504, {len(outside)} outside those windows",
        [
            f"{c.kind} ({c.system}) {c.start:.2f}-{c.end:.2f}s: {c.status} {c.detail}"
            for c in outside[:15]
        ],
    )


# What each kind may answer besides 503/504 (judged above) and 500 (never):
# 502 is a legacy fault the mock injected (fault_rate).
EXPECTED = {
    "patient-read": {200, 502},
    "patient-search": {200, 502},
    "patient-next": {200, 502},
    "lab-search": {200, 502},
    "lab-next": {200, 502},
    "create": {201, 502},
    "transaction": {200, 502},
    "async-create": {201, 202, 502},
    "async-status": {200, 201, 202, 502},
}


def _unexpected_answers(calls: list[Call], writes: list[Write]) -> Check:
    odd: Counter[str] = Counter()
    built_to_fail = {w.wid for w in writes if w.expect_refusal}
    for c in calls:
        if c.status is None or c.status in (500, 503, 504):
            continue
        expected = EXPECTED[c.kind]
        if c.wid in built_to_fail:
            expected = {400, 422, 502}  # built to be refused
        if c.status not in expected:
            odd[f"{c.kind} {c.status} {c.detail}".strip()] += 1
    accepted_bad = [w.wid for w in writes if w.expect_refusal and w.outcome == "acknowledged"]
    return Check(
        "no other unexpected answer",
        not odd and not accepted_bad,
        f"{sum(odd.values())} unexpected, {len(accepted_bad)} invalid transactions accepted",
        [f"{n} x {what}" for what, n in odd.most_common(10)] + accepted_bad[:5],
    )


def _breakers_have_causes(windows: list[Window]) -> Check:
    causes = [w for w in windows if w.reason in ("outage", "restart")]
    uncaused = [
        w
        for w in windows
        if w.reason == "breaker"
        and not any(
            c.system in (w.system, "*") and c.overlaps(w.start, w.seen or w.start) for c in causes
        )
    ]
    opened = sum(1 for w in windows if w.reason == "breaker")
    return Check(
        "breakers opened only during an outage or the restart",
        not uncaused,
        f"{opened} breaker windows, {len(uncaused)} without a cause",
        [f"{w.system} (replica {w.replica}) {w.start:.2f}-{w.end:.2f}s" for w in uncaused],
    )


def _sessions(run: Run, windows: list[Window], checks: list[Check]) -> dict[str, dict[str, int]]:
    restart = [w for w in windows if w.reason == "restart"]
    table: dict[str, dict[str, int]] = {}
    over, refusals = [], []
    for system, code in LIMIT_CODES.items():
        final = run.final_stats.get(system, {})
        peak = int(final.get("peak_sessions", 0))
        row = {"cap": run.session_cap, "peak": peak, "limit refusals": 0, "after restart": 0}
        previous_at, previous = 0.0, 0
        for at, stats in [*run.stats_samples, (float("inf"), run.final_stats)]:
            count = int(stats.get(system, {}).get("faults", {}).get(code, 0))
            if count > previous:
                row["limit refusals"] += count - previous
                if any(w.overlaps(previous_at, at) for w in restart):
                    row["after restart"] += count - previous
                else:
                    refusals.append(
                        f"{system}: {count - previous} x {code} between {previous_at:.2f}s "
                        f"and {at:.2f}s"
                    )
            previous_at, previous = at, count
        if peak > run.session_cap:
            over.append(f"{system}: peak {peak} > cap {run.session_cap}")
        table[system] = row
    checks.append(
        Check(
            "the legacy session cap was never exceeded",
            not over,
            ", ".join(f"{s} {r['peak']}/{r['cap']}" for s, r in table.items()),
            over,
        )
    )
    checks.append(
        Check(
            "session-limit refusals only from sessions the killed process left behind",
            not refusals,
            ", ".join(f"{s} {r['limit refusals']}" for s, r in table.items()),
            refusals,
        )
    )
    return table


def _coverage(calls: list[Call], writes: list[Write], run: Run) -> Check:
    """The run did what it claims: otherwise its other checks prove little."""
    missing = []
    ok_kinds = {c.kind for c in calls if c.status is not None and 200 <= c.status < 300}
    for kind in EXPECTED:
        if kind not in ok_kinds and kind != "async-status":
            missing.append(f"no {kind} succeeded")
    if run.kill_at is None or run.ready_again_at is None:
        missing.append("the gateway was not killed and restarted")
    refused = sum(int(s.get("refused", 0)) for s in run.final_stats.values())
    if run.outages and not refused:
        missing.append("the outage refused no call")
    if not any(w.outcome == "acknowledged" for w in writes):
        missing.append("no write was acknowledged")
    if run.replicas > 1:
        # Every replica served, and the cross-replica paths were taken and worked.
        for replica in range(run.replicas):
            if not any(c.replica == replica and c.status == 200 for c in calls):
                missing.append(f"replica {replica} answered no request with 200")
        if not any(c.kind.endswith("-next") and c.status == 200 for c in calls):
            missing.append("no next link was followed on another replica")
        if not any(
            w.outcome == "acknowledged"
            and w.outcome_replica is not None
            and w.outcome_replica != w.replica
            for w in writes
        ):
            missing.append("no asynchronous outcome was read on another replica")
    return Check(
        "the run exercised every kind and every fault",
        not missing,
        f"{len(calls)} requests, {len(writes)} writes, {refused} calls refused by the outage",
        missing,
    )


# -- figures ------------------------------------------------------------------------


def _by_replica(calls: list[Call], writes: list[Write], run: Run) -> dict[str, dict[str, int]]:
    """Requests, writes and logins per replica (the one a request or write was sent to)."""
    table: dict[str, Counter[str]] = {f"replica {r}": Counter() for r in range(run.replicas)}
    total: Counter[str] = Counter()
    for c in calls:
        row = table[f"replica {c.replica}"]
        if c.status is None:
            key = "no answer"
        elif c.status in (503, 504):
            key = "503/504"
        else:
            key = f"{c.status // 100}xx"
        for counter in (row, total):
            counter["requests"] += 1
            counter[key] += 1
            if c.kind.endswith("-next"):
                counter["next pages"] += 1
                counter[f"next pages {key}"] += 1
    for w in writes:
        row = table[f"replica {w.replica}"]
        for counter in (row, total):
            counter["writes"] += 1
            counter[w.outcome] += 1
            if w.outcome_replica is not None and w.outcome_replica != w.replica:
                counter["async outcome read elsewhere"] += 1
    for name, logins in run.replica_logins.items():
        for system in ("ehr", "lab"):
            for counter in (table.setdefault(name, Counter()), total):
                counter[f"{system} logins"] += logins.get(system, 0)
    return {**{name: dict(row) for name, row in table.items()}, "all": dict(total)}


def _requests(calls: list[Call]) -> dict[str, dict[str, int]]:
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for c in calls:
        table[c.kind]["no answer" if c.status is None else str(c.status)] += 1
    return {kind: dict(sorted(row.items())) for kind, row in sorted(table.items())}


def _latency(calls: list[Call]) -> dict[str, dict[str, float]]:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for c in calls:
        if c.status is not None:
            by_kind[c.kind].append((c.end - c.start) * 1000)
    out = {}
    for kind, values in sorted(by_kind.items()):
        values.sort()
        out[kind] = {
            "n": len(values),
            "p50": round(statistics.median(values), 1),
            "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))], 1),
        }
    return out
