"""The soak report as text: figures first, then every check with its evidence."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.reliability.reconcile import SoakReport

__all__ = ["render"]

WRITE_COLUMNS = [
    "sent",
    "acknowledged",
    "found once",
    "missing",
    "duplicated",
    "refused",
    "refused but applied",
    "unknown",
    "unknown, applied",
    "unknown, not applied",
]

REPLICA_COLUMNS = [
    ("requests", "requests"),
    ("2xx", "2xx"),
    ("4xx", "4xx"),
    ("503/504", "503/504"),
    ("no answer", "no answer"),
    ("next pages", "next pages"),
    ("next pages 2xx", "next 2xx"),
    ("writes", "writes"),
    ("acknowledged", "acked"),
    ("refused", "refused"),
    ("unknown", "unknown"),
    ("async outcome read elsewhere", "async outcome elsewhere"),
    ("ehr logins", "ehr logins"),
    ("lab logins", "lab logins"),
]

WHY = {
    "outage": "the legacy system refused every call (refuse_seconds), +1 s for calls in flight",
    "breaker": "the gateway's breaker for the system was sampled not closed (/readyz)",
    "restart": "SIGKILL until the session hold (+3 s) after the restart: the killed "
    "process's legacy sessions and session-budget slots hold the cap until they expire",
}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    out = [line, "-" * len(line)]
    for row in rows:
        out.append(
            "  ".join(
                str(x).ljust(w) if i == 0 else str(x).rjust(w)
                for i, (x, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return out


def _gateways(settings: dict[str, Any]) -> str:
    replicas, store = settings.get("replicas", 1), settings.get("store", "SQLite")
    if replicas == 1:
        return f"gateway: one process, {store} store"
    return (
        f"gateway: {replicas} replicas sharing one {store} store and paging key; "
        "apps spread over them"
    )


def render(report: SoakReport) -> str:
    s = report.settings
    out = [
        f"soak: {s['duration']:.0f} s of load, {s['clients']} clients, seed {s['seed']}, "
        f"mock session cap {s['max_sessions']}, idle timeout {s['session_idle_timeout']:g} s, "
        f"session hold after a kill {s['session_hold']:g} s",
        _gateways(s),
        "",
        "faults and events (seconds since the start):",
    ]
    out += [f"  {at:7.2f}  {what}" for at, what in report.events]

    statuses = sorted(
        {st for row in report.requests.values() for st in row},
        key=lambda x: (x == "no answer", x),
    )
    rows = []
    for kind, row in report.requests.items():
        lat = report.latency_ms.get(kind, {})
        rows.append(
            [kind, str(sum(row.values()))]
            + [str(row.get(st, "")) for st in statuses]
            + [f"{lat.get('p50', '-')}", f"{lat.get('p99', '-')}"]
        )
    out += ["", "requests by kind and status (latency of answered requests, ms):"]
    out += ["  " + x for x in _table(["kind", "total", *statuses, "p50", "p99"], rows)]

    if report.by_replica:
        out += [
            "",
            "per replica (the one a request or write was sent to; next pages are links another"
            " replica wrote;",
            "async outcome elsewhere: the outcome of a write this replica accepted, read on"
            " another; logins from /metrics):",
        ]
        rows = [
            [name] + [str(row.get(key, 0)) for key, _ in REPLICA_COLUMNS]
            for name, row in report.by_replica.items()
        ]
        header = ["replica", *(title for _, title in REPLICA_COLUMNS)]
        out += ["  " + x for x in _table(header, rows)]

    out += ["", "writes (a transaction counts once; 'found' is per reading in the EHR):"]
    rows = [
        [kind] + [str(row.get(col, 0)) for col in WRITE_COLUMNS]
        for kind, row in report.writes.items()
    ]
    out += ["  " + x for x in _table(["kind", *WRITE_COLUMNS], rows)]
    out += [
        "  unknown: no answer (the connection broke: the SIGKILL), a 504, or an async status",
        "  never final; the app cannot know, so such a write may be applied once or not at all.",
    ]

    if report.refusals:
        out += ["", "why writes were refused (kind, answer, diagnostics):"]
        out += [f"  {n:6}  {why[:150]}" for why, n in list(report.refusals.items())[:12]]

    out += ["", "windows where 503/504 are allowed, and why:"]
    for w in report.windows:
        end = "end" if w["end"] == float("inf") else f"{w['end']:.2f}"
        whose = "" if w.get("replica") is None else f"  replica {w['replica']}"
        out.append(f"  {w['reason']:8} {w['system']:9} {w['start']:7.2f} - {end:>7}{whose}")
    for reason, why in WHY.items():
        out.append(f"  {reason}: {why}; {report.allowed_5xx.get(reason, 0)} answers")

    out += ["", "legacy sessions:"]
    rows = [
        [system, str(r["cap"]), str(r["peak"]), str(r["limit refusals"]), str(r["after restart"])]
        for system, r in report.sessions.items()
    ]
    out += [
        "  " + x for x in _table(["system", "cap", "peak", "limit refusals", "after restart"], rows)
    ]

    if report.gateway_log_errors:
        out += ["", f"gateway log: {len(report.gateway_log_errors)} error lines, first ones:"]
        out += [f"  {line[:300]}" for line in report.gateway_log_errors[:5]]

    out += ["", "checks:"]
    for c in report.checks:
        out.append(f"  [{'pass' if c.ok else 'FAIL'}] {c.name}: {c.figure}")
        if not c.ok:
            out += [f"         {e}" for e in c.evidence]
    out += ["", "soak: " + ("PASSED" if report.ok else f"FAILED ({len(report.failures())} checks)")]
    if not report.ok:
        out.append(f"the gateway's config, store and log are kept in {s['run_dir']}")
    return "\n".join(out)
