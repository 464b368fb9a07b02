"""The billing system's seeded claims, and the rule that moves a claim along.

Claim status advances with the number of ``GetClaimStatus`` queries, so a
test can watch it deterministically: a claim at stage 0 answers RECEIVED
to its first query, IN_REVIEW to the second and its outcome (PAID or
DENIED) from the third on. Seeded claims older than 45 days are already
decided; recent ones start at stage 0 or 1.
"""

from __future__ import annotations

import datetime as _dt
import random
from dataclasses import dataclass
from decimal import Decimal

from bridge.mock.codes import PROCEDURE_CODES
from bridge.mock.dates import Life, between, yyyymmdd

__all__ = [
    "DENY_ABOVE",
    "STAGES",
    "BillingData",
    "Claim",
    "generate_billing",
    "outcome_for",
]

STAGES = ("RECEIVED", "IN_REVIEW")  # then the claim's outcome
# New claims above this amount are denied; the rest are paid at 80%.
DENY_ABOVE = Decimal("5000.00")
_CENTS = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Claim:
    number: str
    mrn: str
    encounter_date: str  # yyyyMMdd
    submitted_date: str  # yyyyMMdd
    amount: Decimal
    diagnoses: tuple[str, ...]
    procedures: tuple[str, ...]
    stage: int  # where the claim starts: 0 RECEIVED, 1 IN_REVIEW, 2 decided
    outcome: str  # PAID or DENIED
    paid_amount: Decimal

    def status(self, queries: int) -> str:
        """The status after ``queries`` status queries (the first one shows the start)."""
        stage = min(self.stage + max(queries - 1, 0), 2)
        return self.outcome if stage >= 2 else STAGES[stage]

    def to_dict(self, queries: int) -> dict[str, object]:
        status = self.status(queries)
        values: dict[str, object] = {
            "ClaimNumber": self.number,
            "MRN": self.mrn,
            "Status": status,
            "SubmittedDate": self.submitted_date,
            "EncounterDate": self.encounter_date,
            "Amount": f"{self.amount:.2f}",
        }
        if status in ("PAID", "DENIED"):
            values["PaidAmount"] = f"{self.paid_amount:.2f}"
        values["DiagnosisCodes"] = list(self.diagnoses)
        values["ProcedureCodes"] = list(self.procedures)
        return values


@dataclass(frozen=True, slots=True)
class BillingData:
    claims: dict[str, Claim]  # by claim number
    by_mrn: dict[str, tuple[str, ...]]  # claim numbers, oldest first
    next_sequence: dict[int, int]  # per submission year


def outcome_for(amount: Decimal) -> tuple[str, Decimal]:
    """How a new claim ends: DENIED above :data:`DENY_ABOVE`, else PAID at 80%."""
    if amount > DENY_ABOVE:
        return "DENIED", Decimal("0.00")
    return "PAID", (amount * Decimal("0.80")).quantize(_CENTS)


def _visit_code(age: int, physical: bool, rng: random.Random) -> str:
    if physical and age >= 18:
        return "99395" if age < 40 else "99396" if age < 65 else "99397"
    return rng.choices(("99212", "99213", "99214", "99215"), weights=(15, 45, 32, 8))[0]


def generate_billing(
    rng: random.Random,
    lives: list[Life],
    active_codes: dict[str, frozenset[str]],
    today: _dt.date,
) -> BillingData:
    drafts: list[tuple[_dt.date, str, _dt.date, tuple[str, ...], tuple[str, ...]]] = []
    for life in lives:
        window = life.window(2)
        if window is None:
            continue
        codes = sorted(active_codes.get(life.mrn, ()))
        age = life.age()
        for _ in range(rng.choices((0, 1, 2, 3), weights=(25, 35, 25, 15))[0]):
            encounter = between(rng, *window)
            submitted = min(encounter + _dt.timedelta(days=rng.randint(1, 10)), today)
            physical = not codes or rng.random() < 0.25
            if physical:
                dx: tuple[str, ...] = ("Z00.00",) if age >= 18 else ("Z00.129",)
            else:
                dx = tuple(rng.sample(codes, min(len(codes), rng.randint(1, 3))))
            procedures = [_visit_code(age, physical, rng)]
            if rng.random() < 0.45:
                labs = rng.sample(("80053", "80061", "85025", "83036", "84443"), 2)
                procedures += ["36415", *labs]
            if rng.random() < 0.1:
                procedures.append("93000")
            drafts.append((submitted, life.mrn, encounter, dx, tuple(procedures)))
    drafts.sort(key=lambda d: (d[0], d[1], d[2]))

    claims: dict[str, Claim] = {}
    by_mrn: dict[str, list[str]] = {}
    sequence: dict[int, int] = {}
    for submitted, mrn, encounter, dx, px in drafts:
        year = submitted.year
        sequence[year] = sequence.get(year, 0) + 1
        number = f"CLM-{year}-{sequence[year]:06d}"
        amount = sum((Decimal(PROCEDURE_CODES[c].fee) for c in px), Decimal("0.00"))
        if (today - submitted).days > 45:
            stage = 2
        else:
            stage = rng.choice((0, 1))
        if rng.random() < 0.12:
            outcome, paid = "DENIED", Decimal("0.00")
        else:
            outcome = "PAID"
            paid = (amount * Decimal(str(rng.choice((0.6, 0.7, 0.8, 0.9))))).quantize(_CENTS)
        claims[number] = Claim(
            number, mrn, yyyymmdd(encounter), yyyymmdd(submitted), amount, dx, px,
            stage, outcome, paid,
        )  # fmt: skip
        by_mrn.setdefault(mrn, []).append(number)
    return BillingData(
        claims=claims,
        by_mrn={mrn: tuple(numbers) for mrn, numbers in by_mrn.items()},
        next_sequence={year: n + 1 for year, n in sequence.items()},
    )
