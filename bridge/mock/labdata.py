"""The lab's seeded history: accessions of the past three years with results.

A patient's results follow their chart: diabetics run high glucose and
A1C, CKD patients high creatinine, and so on. Flags are computed from the
rounded value against the reference range and critical limits, so they
are always consistent with what is sent. Times are the hospital's local
wall-clock time, ISO 8601 without an offset, as the lab vendor sends them.

Accessions are generated up front; their results are generated the first
time someone asks, from an RNG seeded with ``(seed, accession number)``,
and then kept. The answer is the same whenever it is asked, and start-up
does not pay for ninety thousand results nobody reads.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from bridge.mock.codes import LAB_PANELS, LAB_TESTS, LabTest
from bridge.mock.dates import Life, between
from bridge.mock.providers import Provider

__all__ = ["LabData", "LabReport", "LabResult", "generate_lab"]


class LabResult(NamedTuple):
    AccessionNumber: str
    TestCode: str
    TestName: str
    Value: str
    Units: str
    RefLow: str
    RefHigh: str
    Flag: str
    ResultStatus: str
    CollectedAt: str
    ResultedAt: str


@dataclass(frozen=True, slots=True)
class LabReport:
    """One accession: what ``GetReport`` answers."""

    accession: str
    mrn: str
    ordered_by: str
    status: str
    collected_at: str
    reported_at: str
    results: tuple[LabResult, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "AccessionNumber": self.accession,
            "MRN": self.mrn,
            "OrderedBy": self.ordered_by,
            "Status": self.status,
            "CollectedAt": self.collected_at,
            "ReportedAt": self.reported_at,
            "Results": [r._asdict() for r in self.results],
        }


class _Order(NamedTuple):
    """An accession before its results exist."""

    accession: str
    mrn: str
    sex: str
    codes: frozenset[str]
    panel: str
    ordered_by: str
    collected: _dt.datetime
    recent: bool  # collected within two days of the patient's last day


class LabData:
    """Accessions by number and by patient; results on first use (thread-safe)."""

    def __init__(self, seed: int, orders: list[_Order]) -> None:
        # Each accession's RNG is seeded with base + its position: an int
        # seeds several times faster than a string, and the base keeps
        # different --seed values apart.
        digest = hashlib.sha256(f"{seed}/lab-results".encode()).digest()
        self._base = int.from_bytes(digest[:8], "big") << 20
        self._orders = {o.accession: (i, o) for i, o in enumerate(orders)}
        by_mrn: dict[str, list[str]] = {}
        for order in reversed(orders):  # newest first
            by_mrn.setdefault(order.mrn, []).append(order.accession)
        self.accessions: dict[str, tuple[str, ...]] = {
            mrn: tuple(numbers) for mrn, numbers in by_mrn.items()
        }
        self._reports: dict[str, LabReport] = {}

    def __len__(self) -> int:
        return len(self._orders)

    def __iter__(self) -> Iterator[str]:
        return iter(self._orders)

    def report(self, accession: str) -> LabReport | None:
        report = self._reports.get(accession)
        if report is None:
            found = self._orders.get(accession)
            if found is None:
                return None
            position, order = found
            # Two threads may build the same report at once; both build
            # the same value, so the race is harmless.
            report = _report(random.Random(self._base + position), order)
            self._reports[accession] = report
        return report

    def results(self, mrn: str) -> list[LabResult]:
        """Every result of the patient, newest collection first."""
        out: list[LabResult] = []
        for accession in self.accessions.get(mrn, ()):
            report = self.report(accession)
            assert report is not None
            out.extend(report.results)
        return out


# Per-condition shifts of a test's distribution: ICD-10-CM -> {test: (mean, sd)}.
# Where two of a patient's conditions shift the same test, the one listed
# first wins (diabetes over obesity for GLU).
_SHIFTS: dict[str, dict[str, tuple[float, float]]] = {
    "E11.9": {"GLU": (165, 45), "A1C": (7.9, 1.3)},
    "E78.5": {"CHOL": (238, 30), "LDL": (152, 25), "TRIG": (195, 55)},
    "E78.00": {"CHOL": (245, 28), "LDL": (160, 24)},
    "E03.9": {"TSH": (6.2, 3.0)},
    "N18.9": {"CREAT": (1.9, 0.5), "BUN": (32, 8), "K": (4.8, 0.45)},
    "D64.9": {"HGB": (10.1, 1.0)},
    "E66.9": {"TRIG": (175, 45), "GLU": (104, 14)},
}
_HGB_RANGE = {"M": (13.5, 17.5, 15.0), "F": (12.0, 15.5, 13.4), "U": (12.0, 17.5, 14.2)}


def _fmt(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


def _panels(life: Life, codes: frozenset[str], age: int) -> tuple[list[str], list[float]]:
    sex = life.record.sex
    weights = {
        "BMP": 3.0 if age >= 18 else 0.5,
        "BMP+ALT": 1.5 if age >= 18 else 0.2,
        "CBC": 3.0,
        "LIPID": 2.0 if age >= 25 else 0.0,
        "A1C": 4.0 if "E11.9" in codes else (0.6 if age >= 30 else 0.0),
        "A1C+GLU": 2.0 if "E11.9" in codes else 0.0,
        "TSH": 4.0 if "E03.9" in codes else 0.8,
        "STREP": 3.0 if codes & {"J02.0", "J02.9"} else (1.2 if age < 18 else 0.2),
        "HCGU": 0.6 if sex == "F" and 15 <= age <= 50 else 0.0,
    }
    names = [k for k, w in weights.items() if w > 0]
    return names, [weights[k] for k in names]


def generate_lab(
    rng: random.Random,
    seed: int,
    lives: list[Life],
    active_codes: dict[str, frozenset[str]],
    primary: dict[str, Provider],
    providers: tuple[Provider, ...],
) -> LabData:
    """Every accession of the last three years of each patient's span."""
    active = [p for p in providers if p.active]
    drafts: list[tuple[_dt.datetime, str, str, Life, frozenset[str], Provider]] = []
    for life in lives:
        window = life.window(3)
        if window is None:
            continue
        age = life.age()
        codes = active_codes.get(life.mrn, frozenset())
        names, weights = _panels(life, codes, age)
        count = rng.randint(1, 3) if age < 18 else rng.randint(2, 6)
        pcp = primary[life.mrn]
        for panel in rng.choices(names, weights=weights, k=count):
            day = between(rng, *window)
            minute = int(rng.random() * 600)  # 07:00-16:59
            at = _dt.datetime(day.year, day.month, day.day, 7 + minute // 60, minute % 60)
            orderer = pcp if rng.random() < 0.8 else rng.choice(active)
            drafts.append((at, life.mrn, panel, life, codes, orderer))
    drafts.sort(key=lambda d: (d[0], d[1], d[2]))

    orders = []
    sequence: dict[int, int] = {}
    for at, mrn, panel, life, codes, provider in drafts:
        sequence[at.year] = sequence.get(at.year, 10_000) + 1
        orders.append(
            _Order(
                accession=f"A{at.year % 100:02d}-{sequence[at.year]:07d}",
                mrn=mrn,
                sex=life.record.sex,
                codes=codes,
                panel=panel,
                ordered_by=f"{provider.first_name} {provider.last_name}, MD",
                collected=at,
                recent=(life.last_day - at.date()).days <= 2,
            )
        )
    return LabData(seed, orders)


class _Spec(NamedTuple):
    """A test, precomputed for one sex: formats and range text done once."""

    test: LabTest
    low: float | None
    high: float | None
    mean: float
    ref_low: str
    ref_high: str
    spec: str  # format spec of the value, e.g. ".1f"


def _spec(test: LabTest, sex: str) -> _Spec:
    low, high, mean = test.low, test.high, test.mean
    if test.code == "HGB":
        low, high, mean = _HGB_RANGE.get(sex, _HGB_RANGE["U"])
    return _Spec(
        test, low, high, mean, _fmt(low, test.decimals), _fmt(high, test.decimals),
        f".{test.decimals}f",
    )  # fmt: skip


_SPECS: dict[tuple[str, str], _Spec] = {
    (code, sex): _spec(test, sex) for code, test in LAB_TESTS.items() for sex in ("M", "F", "U")
}


def _report(rng: random.Random, order: _Order) -> LabReport:
    accession, codes, recent = order.accession, order.codes, order.recent
    collected = order.collected
    resulted = collected + _dt.timedelta(minutes=45 + int(rng.random() * 1755))
    collected_at = collected.isoformat()
    resulted_at = resulted.isoformat()
    sex = order.sex
    # In _SHIFTS order, never in the frozenset's: set order follows string
    # hashes, which differ from one process to the next.
    shifts = [shift for condition, shift in _SHIFTS.items() if condition in codes]
    results = []
    for code in LAB_PANELS[order.panel]:
        spec = _SPECS[code, sex]
        roll = rng.random()
        if recent and roll < 0.6:
            status = "P"
        else:
            status = "C" if roll > 0.97 else "F"
        value, flag = _value(rng, spec, codes, shifts)
        results.append(
            LabResult(
                accession,
                code,
                spec.test.name,
                value,
                spec.test.units,
                spec.ref_low,
                spec.ref_high,
                flag,
                status,
                collected_at,
                resulted_at,
            )
        )
    statuses = {r.ResultStatus for r in results}
    overall = "P" if "P" in statuses else "C" if "C" in statuses else "F"
    return LabReport(
        accession=accession,
        mrn=order.mrn,
        ordered_by=order.ordered_by,
        status=overall,
        collected_at=collected_at,
        reported_at=resulted_at,
        results=tuple(results),
    )


def _value(
    rng: random.Random,
    spec: _Spec,
    codes: frozenset[str],
    shifts: list[dict[str, tuple[float, float]]],
) -> tuple[str, str]:
    """(Value, Flag) for one result, the flag consistent with the rounded value."""
    test = spec.test
    if test.qualitative:
        odds = 0.35 if test.code == "STREP" and codes & {"J02.0", "J02.9"} else 0.12
        if test.code == "HCGU":
            odds = 0.08
        return ("POSITIVE", "A") if rng.random() < odds else ("NEGATIVE", "")

    mean, sd = spec.mean, test.sd
    for shift in shifts:  # the first condition listed in _SHIFTS wins
        if test.code in shift:
            mean, sd = shift[test.code]
            break
    crit_low, crit_high = test.critical_low, test.critical_high
    roll = rng.random()
    if roll < 0.012 and (crit_high is not None or crit_low is not None):
        # A critical value, beyond the lab's call-the-doctor limits.
        if crit_high is not None and (crit_low is None or roll < 0.006):
            value = crit_high * (1.02 + 0.38 * rng.random())
        else:
            assert crit_low is not None
            value = crit_low * (0.6 + 0.37 * rng.random())
    else:
        value = rng.gauss(mean, sd)
    value = round(max(value, 10.0**-test.decimals), test.decimals)

    flag = ""
    if crit_low is not None and value < crit_low:
        flag = "LL"
    elif crit_high is not None and value > crit_high:
        flag = "HH"
    elif spec.low is not None and value < spec.low:
        flag = "L"
    elif spec.high is not None and value > spec.high:
        flag = "H"
    return format(value, spec.spec), flag
