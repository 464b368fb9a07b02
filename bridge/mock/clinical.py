"""The EHR's clinical chart, seeded: problems, allergies, medications, vitals.

Problems drive everything else in the hospital: a diabetic gets metformin
here and at the pharmacy, high A1C results at the lab and E11.9 on claims.
Records are ``NamedTuple``\\s whose field names are the EHR's element names,
so ``record._asdict()`` is both the SOAP payload and the side door's JSON.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import random
from dataclasses import dataclass
from typing import NamedTuple

from bridge.mock.codes import ALLERGENS, CONDITIONS, DRUGS, Condition, Drug
from bridge.mock.dates import Life, between, mmddyyyy
from bridge.mock.providers import Provider

__all__ = [
    "VITAL_UNITS",
    "Allergy",
    "ClinicalData",
    "Medication",
    "Problem",
    "Therapy",
    "VitalReading",
    "generate_clinical",
]

# The EHR's vital-sign type codes and the one unit each accepts.
VITAL_UNITS: dict[str, str] = {"STEPS": "steps", "HR": "/min", "WT": "LB"}


class Allergy(NamedTuple):
    AllergyId: str
    Substance: str
    SubstanceCode: str
    Reaction: str
    Severity: str
    Status: str
    RecordedDate: str


class Problem(NamedTuple):
    ProblemId: str
    Description: str
    ICD10: str
    OnsetDate: str
    Status: str
    Sensitive: str


class Medication(NamedTuple):
    MedId: str
    Name: str
    LocalCode: str
    Dose: str
    Route: str
    Frequency: str
    StartDate: str
    Status: str


class VitalReading(NamedTuple):
    ReadingId: str
    TypeCode: str
    Value: str
    Unit: str
    TakenAt: str
    DeviceId: str | None


class Therapy(NamedTuple):
    """A drug a patient takes or took; the EHR and the pharmacy both show it."""

    drug: Drug
    start: _dt.date
    end: _dt.date | None  # None: still taking it
    prescriber: Provider


@dataclass(frozen=True, slots=True)
class ClinicalData:
    """Everything the EHR charts, by MRN; patients without entries are left out."""

    problems: dict[str, tuple[Problem, ...]]
    allergies: dict[str, tuple[Allergy, ...]]
    medications: dict[str, tuple[Medication, ...]]
    vitals: dict[str, tuple[VitalReading, ...]]
    therapies: dict[str, tuple[Therapy, ...]]
    # ICD-10-CM codes of each patient's ACTIVE problems, for the lab and billing.
    active_codes: dict[str, frozenset[str]]
    primary: dict[str, Provider]  # each patient's primary care provider
    next_reading_id: int  # the EHR numbers new readings from here


_PROBLEM_COUNTS = {"child": (0, 1, 2), "adult": (0, 1, 2, 3, 4, 5), "older": (1, 2, 3, 4, 5, 6)}
_PROBLEM_WEIGHTS = {"child": (55, 35, 10), "adult": (22, 25, 22, 15, 10, 6),
                    "older": (10, 18, 24, 22, 16, 10)}  # fmt: skip
_ALLERGY_COUNT_WEIGHTS = (60, 20, 12, 6, 2)  # 0..4 allergies: ~60% have none (NKA)
_SEVERITIES = ("MILD", "MODERATE", "SEVERE")
_ALLERGY_STATUS = ("ACTIVE", "INACTIVE", "RESOLVED")
_DRUGS_FOR: dict[str, tuple[Drug, ...]] = {
    c.icd10: tuple(d for d in DRUGS if c.icd10 in d.treats) for c in CONDITIONS
}
_PRIMARY_SPECIALTIES = ("Family Medicine", "Internal Medicine")


def _bracket(age: int) -> str:
    return "child" if age < 18 else "adult" if age < 60 else "older"


def _eligible(age: int) -> tuple[list[Condition], list[float]]:
    """Conditions a patient of ``age`` can have, with cumulative weights."""
    pool = [c for c in CONDITIONS if c.min_age <= age]
    return pool, list(itertools.accumulate(c.weight for c in pool))


_ELIGIBLE = [_eligible(age) for age in range(0, 131)]


def _pick_distinct(rng: random.Random, age: int, n: int) -> list[Condition]:
    pool, cum = _ELIGIBLE[min(age, 130)]
    chosen: dict[str, Condition] = {}
    for _ in range(n * 3):
        if len(chosen) >= n or not pool:
            break
        c = rng.choices(pool, cum_weights=cum)[0]
        chosen.setdefault(c.icd10, c)
    return list(chosen.values())


def generate_clinical(
    rng: random.Random, lives: list[Life], providers: tuple[Provider, ...]
) -> ClinicalData:
    """Chart every patient; ``rng`` is the EHR's own stream, separate from patients'."""
    active = [p for p in providers if p.active]
    pediatric = [p for p in active if p.specialty == "Pediatrics"] or active
    adult_pcp = [p for p in active if p.specialty in _PRIMARY_SPECIALTIES] or active
    allergen_weights = [a.weight for a in ALLERGENS]

    problems: dict[str, tuple[Problem, ...]] = {}
    allergies: dict[str, tuple[Allergy, ...]] = {}
    medications: dict[str, tuple[Medication, ...]] = {}
    vitals: dict[str, tuple[VitalReading, ...]] = {}
    therapies: dict[str, tuple[Therapy, ...]] = {}
    active_codes: dict[str, frozenset[str]] = {}
    primary: dict[str, Provider] = {}
    ids = {"PR": 0, "AL": 0, "MD": 0, "VS": 0}

    def next_id(prefix: str, width: int = 6) -> str:
        ids[prefix] += 1
        return f"{prefix}{ids[prefix]:0{width}d}"

    for life in lives:
        mrn = life.mrn
        age = life.age()
        bracket = _bracket(age)
        pcp = rng.choice(pediatric if age < 18 else adult_pcp)
        primary[mrn] = pcp
        last = life.last_day

        # -- problems ---------------------------------------------------
        n = rng.choices(_PROBLEM_COUNTS[bracket], weights=_PROBLEM_WEIGHTS[bracket])[0]
        chart: list[Problem] = []
        own_therapies: list[Therapy] = []
        codes: set[str] = set()
        for condition in _pick_distinct(rng, age, n):
            if condition.chronic:
                earliest = max(
                    life.dob + _dt.timedelta(days=365 * condition.min_age),
                    last - _dt.timedelta(days=365 * 20),
                )
                onset = between(rng, earliest, last - _dt.timedelta(days=30))
                status = "ACTIVE" if rng.random() < 0.94 else "RESOLVED"
            else:
                onset = between(rng, max(life.dob, last - _dt.timedelta(days=1095)), last)
                status = "RESOLVED" if (last - onset).days > 45 or rng.random() < 0.5 else "ACTIVE"
            chart.append(
                Problem(
                    next_id("PR"),
                    condition.description,
                    condition.icd10,
                    mmddyyyy(onset),
                    status,
                    "Y" if condition.sensitive else "N",
                )
            )
            if status == "ACTIVE":
                codes.add(condition.icd10)
            candidates = _DRUGS_FOR[condition.icd10]
            if not candidates or rng.random() > 0.8:
                continue
            drug = rng.choice(candidates)
            if any(t.drug.rx_code == drug.rx_code for t in own_therapies):
                continue
            if drug.chronic and status == "ACTIVE":
                start = between(rng, onset, last)
                end = None
                if rng.random() < 0.1:
                    end = between(rng, start, last)
            else:
                start = onset
                end = min(onset + _dt.timedelta(days=10), last)
            own_therapies.append(Therapy(drug, start, end, pcp))
        if chart:
            problems[mrn] = tuple(chart)
        if codes:
            active_codes[mrn] = frozenset(codes)

        # -- allergies --------------------------------------------------
        count = rng.choices(range(5), weights=_ALLERGY_COUNT_WEIGHTS)[0]
        if count:
            seen: dict[str, Allergy] = {}
            for allergen in rng.choices(ALLERGENS, weights=allergen_weights, k=count):
                if allergen.code in seen:
                    continue
                reaction = rng.choice(allergen.reactions)
                severity = (
                    "SEVERE"
                    if reaction == "Anaphylaxis"
                    else rng.choices(_SEVERITIES, weights=(50, 40, 10))[0]
                )
                recorded = between(rng, max(life.dob, last - _dt.timedelta(days=5475)), last)
                seen[allergen.code] = Allergy(
                    next_id("AL"),
                    allergen.substance,
                    allergen.code,
                    reaction,
                    severity,
                    rng.choices(_ALLERGY_STATUS, weights=(86, 8, 6))[0],
                    mmddyyyy(recorded),
                )
            allergies[mrn] = tuple(seen.values())

        # -- medications ------------------------------------------------
        if own_therapies:
            own_therapies.sort(key=lambda t: (t.start, t.drug.rx_code))
            therapies[mrn] = tuple(own_therapies)
            medications[mrn] = tuple(
                Medication(
                    next_id("MD"),
                    t.drug.ehr_name,
                    t.drug.ehr_code,
                    t.drug.dose,
                    t.drug.route,
                    t.drug.frequency,
                    mmddyyyy(t.start),
                    "ACTIVE"
                    if t.end is None
                    else ("COMPLETED" if not t.drug.chronic else "DISCONTINUED"),
                )
                for t in own_therapies
            )

        # -- clinic vitals ----------------------------------------------
        if age >= 2 and rng.random() < 0.6:
            visits = sorted(
                between(rng, max(life.dob, last - _dt.timedelta(days=730)), last)
                for _ in range(rng.randint(1, 3))
            )
            weight = _base_weight(rng, age)
            readings = []
            for visit in visits:
                taken = f"{mmddyyyy(visit)} {rng.randint(8, 16):02d}:{rng.randrange(60):02d}:00"
                heart = max(45, round(rng.gauss(74 if age >= 12 else 95, 9)))
                readings.append(
                    VitalReading(next_id("VS", 8), "HR", str(heart), "/min", taken, None)
                )
                pounds = weight + rng.uniform(-4, 4)
                readings.append(
                    VitalReading(next_id("VS", 8), "WT", f"{pounds:.1f}", "LB", taken, None)
                )
            vitals[mrn] = tuple(readings)

    return ClinicalData(
        problems=problems,
        allergies=allergies,
        medications=medications,
        vitals=vitals,
        therapies=therapies,
        active_codes=active_codes,
        primary=primary,
        next_reading_id=ids["VS"] + 1,
    )


def _base_weight(rng: random.Random, age: int) -> float:
    if age < 18:
        return max(25.0, 20 + age * 7.5 + rng.gauss(0, 8))
    return min(380.0, max(95.0, rng.gauss(178, 36)))
